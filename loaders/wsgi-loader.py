#!/usr/bin/env python3
#
# passenger-rs WSGI loader.
#
# Started by the core agent as `python3 wsgi-loader.py` in the app root, with stdin and stdout
# as the handshake channel (the same protocol as rack-loader.rb):
#
#   loader:  !> I have control 1.0
#   core:    You have control 1.0
#   core:    key: value            (app_root, startup_file, environment, connect_password,
#   core:    ...                    socket_dir, base_uri, log_level, app_type, thread_count)
#   core:    (empty line)
#   loader:  !> Ready
#   loader:  !> socket: main;unix:<socket_dir>/python.<16 hex>;session;<thread_count>
#   loader:  !> prefetch: 1        (with one thread: see below)
#   loader:  !>                    (with a trailing space)
#
# It loads the startup file (default <app_root>/passenger_wsgi.py) as the module
# `passenger_wsgi`, with the file's directory first on sys.path and the app root as the
# working directory, and serves its `application` callable (PEP 3333). If that fails it prints
# `!> Error`, `!> html: false`, the message and the traceback, and exits 1.
#
# Once ready it serves the session protocol on its unix socket (mode 0600) with thread_count
# threads (default 1, on the main thread): a 4-byte big-endian length, NUL-separated KEY/VALUE
# pairs (the CGI environment and PASSENGER_CONNECT_PASSWORD), then CONTENT_LENGTH bytes of body;
# it answers with an HTTP/1.1 response. When the core can tell where that response ends (HEAD,
# 204, 304, or exactly one Content-Length that the body matched) the connection is kept for the
# next request; otherwise the head says `Connection: close` and the loader closes it (the
# keep-alive rules: the core's session protocol spec). Each thread serves one connection at a
# time; with one thread, the main thread serves up to two in turn (`prefetch: 1`): the core
# sends a busy process a request ahead on the second, which it serves as soon as it has
# answered the one before (see _serve_in_turn).
# A byte or EOF on stdin (the core wants it to stop, or is gone) makes it remove its socket and
# exit 0. The app's prints go to stdout and stderr, line-buffered, as lines of their own.
#
# PATH_INFO: nginx passes its already-decoded URI, which is used as it is; a PATH_INFO that is
# still identical to the path of REQUEST_URI (or a missing one) is percent-decoded here. Either
# way the app sees the decoded path as a latin-1 "native string" (PEP 3333), and with base_uri
# set, a path under it is split into SCRIPT_NAME = base_uri and PATH_INFO = the rest.
#
# Driving it by hand: run `python3 wsgi-loader.py` in the app's directory, and after its first
# line type
#
#   You have control 1.0
#   connect_password: secret
#   socket_dir: /tmp
#   (an empty line)
#
# It prints the socket path. A request, from another terminal:
#
#   python3 -c 'import socket, struct, sys
#   h = b"REQUEST_METHOD\0GET\0REQUEST_URI\0/\0PASSENGER_CONNECT_PASSWORD\0secret\0"
#   s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
#   s.sendall(struct.pack(">I", len(h)) + h); print(s.makefile("rb").read().decode())' SOCKET
#
# Press Enter (or Ctrl-D) in the loader's terminal to stop it.

import errno
import hmac
import importlib.machinery
import importlib.util
import io
import os
import re
import secrets
import select
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import traceback
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

PROTOCOL_VERSION = '1.0'
# Request bodies up to this size are kept in memory; larger ones go to a temp file.
MAX_MEMORY_BODY = 1024 * 1024
MAX_HEADER = 1024 * 1024
COPY_CHUNK = 64 * 1024
# A session header must arrive within this many seconds of its first byte (or of the accept).
# A kept connection waits for that first byte without limit: the core closes idle ones.
HEADER_TIMEOUT = 60
# At exit, threads the app started itself get this many seconds before the process goes anyway.
EXIT_GRACE = 5
# How long the worker threads get to finish at shutdown.
SHUTDOWN_JOIN = 2
BACKLOG = 1024
# The first read of a connection: the whole session header, as a rule.
FIRST_READ = 16 * 1024
# Small response chunks go out in one write together with the head.
COALESCE_LIMIT = 64 * 1024

_LOADER_FILE = os.path.abspath(__file__)


# ---------------------------------------------------------------------------------------------
# stdout, stderr and the protocol lines


class _AppStdout(io.TextIOWrapper):
    """sys.stdout for the app: line-buffered, and aware of whether its output ends mid-line, so
    that a protocol line is never glued to the end of an unfinished line of the app's."""

    at_line_start = True

    def write(self, s):
        n = super().write(s)
        if s:
            self.at_line_start = s.endswith('\n')
        return n


_app_stdout = None


def _setup_stdio():
    global _app_stdout
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass
    try:
        raw = io.FileIO(1, 'w', closefd=False)
        _app_stdout = _AppStdout(
            io.BufferedWriter(raw),
            encoding=getattr(sys.stdout, 'encoding', None) or 'utf-8',
            errors=getattr(sys.stdout, 'errors', None) or 'strict',
            line_buffering=True,
        )
        sys.stdout = _app_stdout
    except (OSError, ValueError):
        _app_stdout = None


def _flush_app_output():
    for stream in (_app_stdout, sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    try:
        if _app_stdout is not None and not _app_stdout.at_line_start:
            _app_stdout.write('\n')
            _app_stdout.flush()
    except Exception:
        pass


def _write_fd(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _protocol(*lines):
    _flush_app_output()
    text = ''.join('!> %s\n' % line for line in lines)
    _write_fd(1, text.encode('utf-8', 'surrogateescape'))


def _log(message):
    try:
        err = sys.stderr
        err.write(message if message.endswith('\n') else message + '\n')
        err.flush()
    except Exception:
        pass


def _app_traceback(exc):
    """The traceback of `exc` without the loader's and importlib's own frames on top."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == _LOADER_FILE
        or tb.tb_frame.f_code.co_filename.startswith('<frozen ')
    ):
        tb = tb.tb_next
    return traceback.format_exception(type(exc), exc, tb or exc.__traceback__)


def _fail_startup(summary, exc=None):
    """Reports a start-up failure to the core and exits 1."""
    lines = [summary]
    if exc is not None:
        lines.extend(''.join(_app_traceback(exc)).splitlines())
    _protocol('Error', 'html: false')
    _write_fd(1, ''.join(line + '\n' for line in lines).encode('utf-8', 'surrogateescape'))
    os._exit(1)


# ---------------------------------------------------------------------------------------------
# The handshake


def _take_stdin():
    """Keeps the control channel (stdin) for the loader on a private descriptor, and gives the
    app and its children /dev/null as stdin, so that none of them can swallow the stop byte."""
    try:
        ctl = os.dup(0)
    except OSError as e:
        _fail_startup('The loader has no stdin (%s); it must be started by the passenger-rs core, '
                      'or by hand from a terminal' % e)
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except OSError:
        pass
    return ctl


def _read_line(fd):
    """One line from `fd`, read a byte at a time so that nothing after it is consumed;
    None at EOF."""
    buf = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte:
            return bytes(buf) if buf else None
        if byte == b'\n':
            return bytes(buf)
        buf += byte


def _text(raw):
    return raw.decode('utf-8', 'surrogateescape').rstrip('\r')


def _read_options(ctl):
    _protocol('I have control %s' % PROTOCOL_VERSION)
    expected = 'You have control %s' % PROTOCOL_VERSION
    answer = _read_line(ctl)
    if answer is None or _text(answer) != expected:
        _fail_startup('Expected %r from the spawner on stdin, got %r'
                      % (expected, None if answer is None else _text(answer)))
    options = {}
    while True:
        line = _read_line(ctl)
        if line is None:
            _fail_startup('The spawner closed stdin before the empty line that ends the options')
        line = _text(line)
        if not line:
            return options
        key, sep, value = line.partition(': ')
        if not sep:
            key, sep, value = line.partition(':')
            value = value.strip()
        options[key.strip()] = value


def _thread_count(options):
    text = options.get('thread_count') or '1'
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        _fail_startup('The option thread_count is %r; it must be a whole number of at least 1'
                      % text)
    return count


def _native(text):
    """A str from the handshake (UTF-8) as a WSGI native string (bytes as latin-1)."""
    return text.encode('utf-8', 'surrogateescape').decode('latin-1')


def _base_uri(options):
    base = _native(options.get('base_uri') or '').rstrip('/')
    return base if base.startswith('/') else ''


# ---------------------------------------------------------------------------------------------
# Loading the app


def _load_app(options):
    app_root = os.path.abspath(options.get('app_root') or os.getcwd())
    try:
        os.chdir(app_root)
    except OSError as e:
        _fail_startup('Cannot enter the app root %s: %s; check that it exists and that the app\'s '
                      'user may read it' % (app_root, e.strerror or e))
    env = options.get('environment') or 'production'
    os.environ.setdefault('PASSENGER_APP_ENV', env)
    os.environ.setdefault('IN_PASSENGER', '1')

    startup_file = options.get('startup_file') or 'passenger_wsgi.py'
    startup_file = os.path.join(app_root, startup_file)
    if not os.path.isfile(startup_file):
        _fail_startup('The startup file %s does not exist; create it (it must define the WSGI '
                      'callable `application`) or set passenger_startup_file' % startup_file)

    # The loader's own directory is none of the app's business; the app's directory comes first.
    loader_dir = os.path.dirname(_LOADER_FILE)
    if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == loader_dir:
        del sys.path[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(startup_file)))

    name = 'passenger_wsgi'
    try:
        loader = importlib.machinery.SourceFileLoader(name, startup_file)
        spec = importlib.util.spec_from_file_location(name, startup_file, loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
    except BaseException as e:  # anything at all, SystemExit included, is reported
        sys.modules.pop(name, None)
        _fail_startup('The app in %s could not be loaded from %s' % (app_root, startup_file), e)

    app = getattr(module, 'application', None)
    if app is None:
        _fail_startup('%s does not define `application`, the WSGI callable the loader serves; '
                      'define it (e.g. `application = app` for Flask)' % startup_file)
    if not callable(app):
        _fail_startup('`application` in %s is a %s, not a callable; it must be the WSGI app'
                      % (startup_file, type(app).__name__))
    return app


def _create_server(options):
    sock_dir = options.get('socket_dir') or tempfile.gettempdir()
    path = os.path.join(sock_dir, 'python.%s' % secrets.token_hex(8))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        _fail_startup('Cannot create the app\'s socket %s: %s; check that socket_dir exists, is '
                      'writable, and is short enough for a unix socket path' % (path, e))
    finally:
        os.umask(old_umask)
    return sock, path


# ---------------------------------------------------------------------------------------------
# The request: session header, body, environ


class _BadSession(Exception):
    """The connection did not carry a usable session; it is dropped."""


class ClientDisconnected(OSError):
    """Raised by write() (and ends the response) when the core has closed the connection."""


class InputStream:
    """wsgi.input: the request body, which ends after CONTENT_LENGTH bytes whatever lies
    beyond them."""

    def __init__(self, raw, length):
        self._raw = raw
        self._left = length

    def _limit(self, size):
        if size is None or size < 0 or size > self._left:
            return self._left
        return size

    def read(self, size=-1):
        size = self._limit(size)
        if size == 0:
            return b''
        data = self._raw.read(size)
        self._left -= len(data)
        return data

    def readline(self, size=-1):
        size = self._limit(size)
        if size == 0:
            return b''
        line = self._raw.readline(size)
        self._left -= len(line)
        return line

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self):
        return True

    def close(self):
        # The loader closes the body when the request is done.
        pass


class FileWrapper:
    """wsgi.file_wrapper: iterates over a file in blocks; a real file is sent with sendfile()."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self):
        close = getattr(self.filelike, 'close', None)
        if close is not None:
            close()


def _recv_exact(conn, n):
    """Up to `n` bytes: fewer only if the connection ended first."""
    buf = bytearray(n)
    got = 0
    with memoryview(buf) as view:
        while got < n:
            k = conn.recv_into(view[got:], n - got)
            if k == 0:
                break
            got += k
    return bytes(buf) if got == n else bytes(buf[:got])


_LENGTH = struct.Struct('>I')


def _read_header(conn, chunk=None):
    """The session header as a dict of native strings (latin-1), and the bytes read past it
    (the start of the body); (None, b'') if the connection closed before sending anything.
    `chunk`: the first bytes, when already received (on a kept connection).

    Reads without waiting, as much as has arrived: as a rule the whole header in one recv().
    What has not arrived yet is awaited with poll(), HEADER_TIMEOUT in all."""
    data = b''
    want = 4
    length = None
    poller = None
    while True:
        if chunk is None:
            try:
                chunk = conn.recv(max(FIRST_READ, want - len(data)), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                pass
        if chunk is not None:
            if not chunk:
                if not data:
                    return None, b''
                if length is None:
                    raise _BadSession('the connection closed inside the 4-byte length of the '
                                      'session header')
                raise _BadSession('the connection closed after %d of the %d bytes of the '
                                  'session header' % (len(data) - 4, length))
            data = data + chunk if data else chunk
            if length is None and len(data) >= 4:
                (length,) = _LENGTH.unpack_from(data)
                if length > MAX_HEADER:
                    raise _BadSession('the session header claims %d bytes, over the limit of %d'
                                      % (length, MAX_HEADER))
                want = 4 + length
            if len(data) >= want:
                break
            chunk = None
        if poller is None:
            poller = select.poll()
            poller.register(conn, select.POLLIN)
            deadline = time.monotonic() + HEADER_TIMEOUT
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise _BadSession('no complete session header arrived within %d seconds'
                              % HEADER_TIMEOUT)
    # Latin-1 maps bytes to code points one to one: decoding first, then splitting, gives the
    # native strings of PEP 3333 with one decode for the whole header.
    parts = data[4:want].decode('latin-1').split('\0')
    if parts and parts[-1] == '':
        parts.pop()
    if len(parts) % 2:
        raise _BadSession('the session header has a key without a value (%d NUL-separated '
                          'fields)' % len(parts))
    pairs = iter(parts)
    return dict(zip(pairs, pairs)), data[want:]


def _content_length(pairs):
    text = pairs.get('CONTENT_LENGTH', '').strip()
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise _BadSession('CONTENT_LENGTH %r is not a number of bytes' % text)
    return int(text)


def _read_body(conn, length, early=b''):
    """Exactly `length` bytes of body, in memory or (when large) in an unlinked temp file.
    `early`: body bytes that came with the session header."""
    if len(early) > length:
        early = early[:length]
    if length <= MAX_MEMORY_BODY:
        if len(early) == length:
            return io.BytesIO(early)
        data = early + _recv_exact(conn, length - len(early))
        if len(data) < length:
            raise _BadSession('the request body ended after %d of its %d bytes (CONTENT_LENGTH)'
                              % (len(data), length))
        return io.BytesIO(data)
    spool = tempfile.TemporaryFile(prefix='passenger-wsgi-body.')
    try:
        spool.write(early)
        buf = bytearray(COPY_CHUNK)
        view = memoryview(buf)
        left = length - len(early)
        while left:
            k = conn.recv_into(view, min(left, COPY_CHUNK))
            if k == 0:
                raise _BadSession('the request body ended after %d of its %d bytes '
                                  '(CONTENT_LENGTH)' % (length - left, length))
            spool.write(view[:k])
            left -= k
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise


_ABSOLUTE_URI = re.compile(r'\A[A-Za-z][A-Za-z0-9+.-]*://[^/?]*')


def _unquote_native(path):
    return unquote_to_bytes(path.encode('latin-1')).decode('latin-1')


def _build_environ(env, body, context):
    """The WSGI environ, made of `env` (the session header, which it changes)."""
    env.pop('PASSENGER_CONNECT_PASSWORD', None)
    env.pop('HTTP_CONTENT_TYPE', None)
    env.pop('HTTP_CONTENT_LENGTH', None)
    env.setdefault('REQUEST_METHOD', 'GET')
    env.setdefault('SERVER_NAME', 'localhost')
    env.setdefault('SERVER_PORT', '80')
    env.setdefault('SERVER_PROTOCOL', 'HTTP/1.1')

    uri = env.get('REQUEST_URI', '')
    if uri[:1] != '/':
        uri = _ABSOLUTE_URI.sub('', uri)
    raw_path, _, raw_query = uri.partition('?')
    env.setdefault('QUERY_STRING', raw_query)
    path = env.get('PATH_INFO')
    if path is None or path == raw_path:
        # Still in its encoded form (or absent): decode it. A PATH_INFO that differs from the
        # raw path was decoded by nginx already and must not be decoded twice.
        path = raw_path if path is None else path
        if '%' in path:
            path = _unquote_native(path)
    # The frontend's SCRIPT_NAME names the base URI this request came in under; the
    # handshake's is the one the process was spawned for (an app served under two base URIs
    # shares its processes). nginx sends PATH_INFO already split from it.
    script_name = env.get('SCRIPT_NAME', '')
    if script_name not in ('', '/') and not (path == script_name
                                              or path.startswith(script_name + '/')):
        path = script_name + (path or '')
    base = script_name if script_name not in ('', '/') else context.base_uri
    if base and (path == base or path.startswith(base + '/')):
        env['SCRIPT_NAME'] = base
        env['PATH_INFO'] = path[len(base):]
    else:
        script_name = env.get('SCRIPT_NAME', '')
        env['SCRIPT_NAME'] = '' if script_name == '/' else script_name
        env['PATH_INFO'] = path or ('' if env['SCRIPT_NAME'] else '/')

    https = env.get('HTTPS', '').lower() in ('on', '1', 'true', 'yes')
    env['wsgi.version'] = (1, 0)
    env['wsgi.url_scheme'] = 'https' if https else 'http'
    env['wsgi.input'] = body
    env['wsgi.input_terminated'] = True
    env['wsgi.errors'] = sys.stderr
    env['wsgi.multithread'] = context.threads > 1
    env['wsgi.multiprocess'] = True
    env['wsgi.run_once'] = False
    env['wsgi.file_wrapper'] = FileWrapper
    return env


# ---------------------------------------------------------------------------------------------
# The response


_STATUS = re.compile(r'\A[0-9]{3}(?: [^\r\n\0]*)?\Z')
_TOKEN = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


# Statuses and header names seen before, and what checking them gave: apps send the same few
# again and again. Each holds at most _CACHE_LIMIT entries.
_CACHE_LIMIT = 512
_STATUS_CACHE = {}  # status as the app gave it => the status to send
_NAME_CACHE = {}  # valid header name => its kind, below

# Header kinds: Content-Length; one that keeps the core from finding the end of the response by
# its length (the core reads such a response to EOF, so the connection must close); Connection.
_LENGTH_KIND, _UNFRAMED_KIND, _CONNECTION_KIND = 1, 2, 3
_KINDS = {'content-length': _LENGTH_KIND, 'transfer-encoding': _UNFRAMED_KIND,
          '!~request-oob-work': _UNFRAMED_KIND, 'connection': _CONNECTION_KIND}


def _check_status(status):
    if type(status) is str:
        checked = _STATUS_CACHE.get(status)
        if checked is not None:
            return checked
    checked = _check_new_status(status)
    if type(status) is str and len(_STATUS_CACHE) < _CACHE_LIMIT:
        _STATUS_CACHE[status] = checked
    return checked


def _check_new_status(status):
    if not isinstance(status, str):
        raise TypeError('the WSGI status must be a str like "200 OK", not %s'
                        % type(status).__name__)
    if not _STATUS.match(status):
        raise ValueError('the WSGI status %r is not a three-digit code followed by a space and '
                         'a reason phrase' % status)
    if len(status) == 3:
        try:
            status = '%s %s' % (status, HTTPStatus(int(status)).phrase)
        except ValueError:
            status += ' Unknown'
    try:
        status.encode('latin-1')
    except UnicodeEncodeError:
        raise ValueError('the WSGI status %r has characters outside latin-1' % status) from None
    return status


def _check_headers(headers):
    """The headers as a new list of (name, value) tuples; the Content-Length they declare (None
    if none, or not a plain number), how many Content-Length headers there are, and whether
    another header rules out keeping the connection (Transfer-Encoding, Connection: close...)."""
    checked = []
    content_length = None
    lengths = 0
    unframed = False
    for item in headers:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError('every WSGI response header must be a (name, value) tuple, not %r'
                            % (item,))
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError('the response header %r must have a str name and value' % (item,))
        kind = _NAME_CACHE.get(name) if type(name) is str else None
        if kind is None:
            if not _TOKEN.match(name):
                raise ValueError('the response header name %r is not a valid HTTP token' % name)
            kind = _KINDS.get(name.lower(), 0)
            if type(name) is str and len(_NAME_CACHE) < _CACHE_LIMIT:
                _NAME_CACHE[name] = kind
        if '\r' in value or '\n' in value or '\0' in value:
            raise ValueError('the value of the response header %s contains CR, LF or NUL' % name)
        if not value.isascii():
            try:
                value.encode('latin-1')
            except UnicodeEncodeError:
                raise ValueError('the response header %s has characters outside latin-1; '
                                 'encode the value (e.g. RFC 5987) first' % name) from None
        if kind:
            if kind == _LENGTH_KIND:
                lengths += 1
                # Digits only, as the core parses it: anything else leaves the length unknown.
                digits = value.strip(' \t')
                content_length = int(digits) if digits.isascii() and digits.isdigit() else None
            elif kind == _UNFRAMED_KIND or 'close' in value.lower():
                unframed = True
        checked.append((name, value))
    return checked, content_length, lengths, unframed


class _Response:
    """One WSGI call: start_response, write, the body iterable, and what goes on the wire."""

    def __init__(self, conn, environ, may_keep=False, stopping=None):
        self.conn = conn
        self.environ = environ
        self.head_request = environ['REQUEST_METHOD'] == 'HEAD'
        # `stopping` (an Event) is checked when the head goes out: a stopping loader closes.
        self.may_keep = may_keep
        self.stopping = stopping
        self.keep = False  # decided with the head
        self.status = None
        self.headers = None
        self.headers_sent = False
        self.body_allowed = True
        self.content_length = None
        self.lengths = 0  # Content-Length headers
        self.unframed = False
        self.sent = 0  # body bytes written
        self.dropped = 0  # body bytes beyond the Content-Length, not written
        self.client_gone = False

    # -- the app's side

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError('start_response() was called a second time without exc_info')
        status = _check_status(status)
        headers, content_length, lengths, unframed = _check_headers(headers)
        self.status = status
        self.headers = headers
        self.content_length = content_length
        self.lengths = lengths
        self.unframed = unframed
        return self.write

    def write(self, data):
        if self.status is None:
            raise AssertionError('write() was called before start_response()')
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError('write() takes bytes, not %s' % type(data).__name__)
        self._emit(data)

    # -- the wire

    def _sendall(self, data):
        try:
            self.conn.sendall(data)
        except OSError as e:
            self.client_gone = True
            raise ClientDisconnected(e.errno, 'the core closed the connection: %s'
                                     % (e.strerror or e)) from None

    def _head(self):
        code = int(self.status[:3])
        self.body_allowed = not (self.head_request or code < 200 or code in (204, 304))
        # The connection is kept only if the core can tell where this response ends: no body
        # at all, or exactly one Content-Length (the body is checked against it at the end).
        if self.body_allowed:
            delimited = self.lengths == 1 and self.content_length is not None
        else:
            delimited = code != 101
        self.keep = (delimited and self.may_keep and not self.unframed
                     and not self.stopping.is_set())
        lines = ['%s: %s\r\n' % header for header in self.headers]
        if not self.keep and code != 101:  # (a 101 has its own Connection header)
            lines.append('Connection: close\r\n')
        return ('HTTP/1.1 %s\r\n%s\r\n' % (self.status, ''.join(lines))).encode('latin-1')

    def _clip(self, data):
        """The part of `data` that fits in the declared Content-Length, if any."""
        if self.content_length is not None:
            room = self.content_length - self.sent
            if len(data) > room:
                room = max(room, 0)
                self.dropped += len(data) - room
                data = memoryview(data)[:room]
        self.sent += len(data)
        return data

    def _add_length(self, length):
        """Adds the Content-Length the app left out, when a body is allowed (so that the
        connection can be kept)."""
        if (self.status is not None and not self.lengths and not self.head_request
                and self.status[:3] not in ('204', '304') and not self.status.startswith('1')):
            self.headers.append(('Content-Length', str(length)))
            self.content_length = length
            self.lengths = 1

    def _emit(self, data):
        head = b''
        if not self.headers_sent:
            head = self._head()
            self.headers_sent = True
        data = self._clip(data) if data and self.body_allowed else b''
        if head and len(data) <= COALESCE_LIMIT:
            self._sendall(head + bytes(data))
            return
        if head:
            self._sendall(head)
        if data:
            self._sendall(data)

    def _sendfile(self, wrapper):
        """Sends a FileWrapper around a regular file with sendfile(); False if it is not one."""
        filelike = wrapper.filelike
        try:
            if 'b' not in getattr(filelike, 'mode', 'b'):
                return False
            info = os.fstat(filelike.fileno())
            if not stat.S_ISREG(info.st_mode):
                return False
            offset = filelike.tell()
        except (AttributeError, OSError, ValueError):
            return False
        count = max(info.st_size - offset, 0)
        self._add_length(count)
        self._emit(b'')
        if not self.body_allowed:
            return True
        if self.content_length is not None and count > self.content_length:
            self.dropped += count - self.content_length
            count = self.content_length
        if count:
            try:
                self.sent += self.conn.sendfile(filelike, offset, count)
            except OSError as e:
                self.client_gone = True
                raise ClientDisconnected(e.errno, 'the core closed the connection: %s'
                                         % (e.strerror or e)) from None
        return True

    def _send_result(self, result):
        if isinstance(result, FileWrapper) and self.status is not None \
                and self._sendfile(result):
            return
        if isinstance(result, (list, tuple)) and not self.lengths:
            # A list of bytes: its length is known before anything is sent.
            total = 0
            for chunk in result:
                if not isinstance(chunk, bytes):
                    break
                total += len(chunk)
            else:
                self._add_length(total)
        for chunk in result:
            if not isinstance(chunk, (bytes, bytearray)):
                raise TypeError('the app\'s response body yielded a %s; WSGI body chunks must '
                                'be bytes (encode text first)' % type(chunk).__name__)
            if not chunk:
                continue
            if self.status is None:
                raise AssertionError('the app produced body data before calling '
                                     'start_response()')
            self._emit(chunk)
            if not self.body_allowed:
                break  # HEAD, 1xx, 204, 304: the headers are all there is
        if self.status is None:
            raise AssertionError('the app returned without calling start_response()')
        if not self.headers_sent:
            self._emit(b'')

    def _app_failed(self, exc):
        if self.client_gone:
            return
        method = self.environ.get('REQUEST_METHOD', '?')
        uri = self.environ.get('REQUEST_URI') or self.environ.get('PATH_INFO', '?')
        _log('Error in the WSGI app while handling %s %s%s:\n%s'
             % (method, uri, ' (the response was cut short)' if self.headers_sent else '',
                ''.join(_app_traceback(exc)).rstrip('\n')))
        if self.headers_sent:
            return  # closing the connection is all that can be done now
        self.headers_sent = True
        body = b'Internal Server Error\n'
        head = (b'HTTP/1.1 500 Internal Server Error\r\n'
                b'Content-Type: text/plain; charset=utf-8\r\n'
                b'Content-Length: %d\r\nConnection: close\r\n\r\n' % len(body))
        try:
            self.conn.sendall(head if self.head_request else head + body)
        except OSError:
            pass

    def run(self, app):
        """Calls the app and sends its response; True if the connection may carry the next
        request: the head allowed it and the body went out whole, to its Content-Length."""
        result = None
        done = False
        try:
            result = app(self.environ, self.start_response)
            self._send_result(result)
            done = True
        except ClientDisconnected:
            pass
        except Exception as e:
            self._app_failed(e)
        finally:
            close = getattr(result, 'close', None)
            if close is not None:
                try:
                    close()
                except Exception as e:
                    done = False
                    _log('Error in the close() of the WSGI app\'s response:\n%s'
                         % ''.join(_app_traceback(e)).rstrip('\n'))
        if self.dropped:
            _log('The WSGI app\'s response to %s %s was %d bytes longer than its Content-Length '
                 '(%d); the excess was dropped'
                 % (self.environ.get('REQUEST_METHOD', '?'),
                    self.environ.get('REQUEST_URI') or self.environ.get('PATH_INFO', '?'),
                    self.dropped, self.content_length))
        # A shorter body than announced: the core sees it short only if the connection closes.
        return done and self.keep and (not self.body_allowed or self.sent == self.content_length)


# ---------------------------------------------------------------------------------------------
# Serving


class _Context:
    def __init__(self, app, password, base_uri, threads, path):
        self.app = app
        self.password = password
        self.base_uri = base_uri
        self.threads = threads
        self.path = path
        self.stopping = threading.Event()
        # Kept connections waiting for their next request: the stop path shuts them down, which
        # wakes the threads blocked reading them. Guarded by `lock`.
        self.idle = set()
        self.lock = threading.Lock()


def _wake_idle(context):
    """Marks the loader as stopping and ends the wait of every idle kept connection."""
    with context.lock:
        context.stopping.set()  # under the lock: no thread adds a connection after this
        for conn in context.idle:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        context.idle.clear()


def _await_request(conn, waiter, context):
    """The first bytes of the next request on a kept connection; b'' when the core closed it or
    the loader is stopping. `waiter`: a poll object with `conn` registered for input.

    The wait is a poll() for input, not a blocking recv(): a thread asleep in recv() on a unix
    socket is also woken each time the core reads what this thread last sent (the kernel's
    "room to write" wakeup reaches readers too), and goes back to sleep. That is a context
    switch per response, on this process's CPU and the core's; poll() is woken by input only."""
    with context.lock:
        if context.stopping.is_set():
            return b''
        context.idle.add(conn)
    data = b''
    try:
        waiter.poll()  # ends on input, EOF, or the shutdown by _wake_idle
        data = conn.recv(FIRST_READ)  # blocking: the core closes connections it does not need
    except OSError:
        pass  # a reset: the same as a close
    finally:
        with context.lock:
            try:
                context.idle.remove(conn)
            except KeyError:
                # _wake_idle shut it down: a request that came at that moment is not served (the
                # core sees the close before any response, as if it had come a bit earlier).
                data = b''
    return data


def _serve_request(conn, first, context):
    """Serves one request of `conn`, whose first bytes are `first` (None: none read yet). True
    when the connection may carry the next request; False when it must be closed (a failure is
    logged)."""
    body = None
    try:
        pairs, early = _read_header(conn, first)
        if pairs is None:
            return False
        given = pairs.pop('PASSENGER_CONNECT_PASSWORD', None)
        if given is None or not hmac.compare_digest(given.encode('latin-1'), context.password):
            _log('Refused a session on %s: %s connect password; only the passenger-rs core '
                 'may connect to this socket'
                 % (context.path, 'no' if given is None else 'a wrong'))
            return False
        length = _content_length(pairs)
        body = _read_body(conn, length, early)
        # Bytes beyond the body are out of step (the core never sends any): close after it.
        may_keep = len(early) <= length and pairs.get('REQUEST_METHOD') != 'OOBW'
        environ = _build_environ(pairs, InputStream(body, length), context)
        return _Response(conn, environ, may_keep, context.stopping).run(context.app)
    except _BadSession as e:
        _log('Dropped a connection on %s: %s' % (context.path, e))
    except OSError as e:
        _log('Dropped a connection on %s: %s' % (context.path, e))
    except Exception as e:  # a bug of the loader's own: that connection is lost, not the loader
        _log('Internal error of the WSGI loader while serving a connection on %s:\n%s'
             % (context.path, ''.join(traceback.format_exception(type(e), e,
                                                                 e.__traceback__)).rstrip()))
    finally:
        if body is not None:
            body.close()
    return False


def _serve_connection(conn, context):
    """Serves the requests of one connection, one after the other, while its responses let the
    core see where they end."""
    try:
        if conn.gettimeout() is not None:  # socket.setdefaulttimeout() in the app
            conn.settimeout(None)
        first = None
        waiter = None
        while _serve_request(conn, first, context):
            if waiter is None:
                waiter = select.poll()
                waiter.register(conn, select.POLLIN)
            first = _await_request(conn, waiter, context)
            if not first:
                return
    finally:
        _close(conn)


def _close(conn):
    try:
        conn.close()
    except OSError:
        pass


def _first_bytes(conn):
    """The first bytes of a request on `conn`, which has input; b'' at its end."""
    try:
        return conn.recv(FIRST_READ)
    except OSError:
        return b''  # a reset: the same as a close


def _serve_in_turn(server, ctl, context, limit):
    """thread_count 1: the main thread serves up to `limit` connections, one request at a time,
    taking turns among those that have one. The core opens a second connection to a busy process
    to send it a request ahead (the `prefetch: 1` of the handshake): the process starts that
    request as soon as it has answered the one before, where with one connection it would sleep
    until the core had read its answer and sent the next request (that sleep and wake-up cost
    about as much CPU as a hello-world request itself). All of it waits in one poll(), with the
    socket while there is room for a connection, and `ctl`: a byte or EOF there (the stop) ends
    the serving once the requests already sent are answered, saying `Connection: close`."""
    server.setblocking(False)
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    conns = {}  # fd -> connection
    listening = False
    try:
        while True:
            if listening != (len(conns) < limit):
                listening = not listening
                if listening:
                    poller.register(server, select.POLLIN)
                else:
                    poller.unregister(server)
            for fd, _ in poller.poll():
                if fd == ctl:
                    context.stopping.set()
                    _answer_sent_requests(conns, context)
                    return
                if fd == server.fileno():  # registered only while there is room
                    conn = _accept(server, context)
                    if conn is not None:
                        conns[conn.fileno()] = conn
                        poller.register(conn, select.POLLIN)
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                first = _first_bytes(conn)
                if not first or not _serve_request(conn, first, context):
                    poller.unregister(fd)
                    del conns[fd]
                    _close(conn)
    finally:
        for conn in conns.values():
            _close(conn)


def _answer_sent_requests(conns, context):
    """When stopping: the requests that have arrived on `conns` are answered (`Connection:
    close`), and every connection is closed."""
    for conn in conns.values():
        waiter = select.poll()
        waiter.register(conn, select.POLLIN)
        if waiter.poll(0):
            first = _first_bytes(conn)
            if first:
                _serve_request(conn, first, context)
    for conn in conns.values():
        _close(conn)
    conns.clear()


_ACCEPT_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _accept(server, context):
    """A new connection in blocking mode, or None: nothing was waiting after all, or a lack of
    resources (logged; retried after 0.1 s). Other failures raise OSError."""
    try:
        conn, _ = server.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return None
    except OSError as e:
        if e.errno not in _ACCEPT_RESOURCE_ERRORS:
            raise
        _log('Cannot accept a connection on %s: %s; retrying' % (context.path, e))
        context.stopping.wait(0.1)
        return None
    conn.settimeout(None)
    return conn



def _serve_threaded(server, ctl, context):
    """thread_count N > 1: N threads accept and serve concurrently; the main thread waits for
    the stop byte."""
    stopping = context.stopping

    def worker():
        while not stopping.is_set():
            try:
                conn = _accept(server, context)
            except OSError as e:  # the socket shut down (stopping), or worse
                if not stopping.is_set():
                    _log('A worker thread of %s stopped: accept() failed: %s' % (context.path, e))
                return
            if conn is None:
                continue
            try:
                _serve_connection(conn, context)
            except BaseException as e:  # SystemExit and the like from the app: log, go on
                _log('A request on %s ended with %s:\n%s'
                     % (context.path, type(e).__name__, ''.join(_app_traceback(e)).rstrip('\n')))

    workers = []
    try:
        for i in range(context.threads):
            t = threading.Thread(target=worker, name='passenger-wsgi-%d' % (i + 1), daemon=True)
            t.start()
            workers.append(t)
        os.read(ctl, 1)  # returns on a byte or EOF
    finally:
        _wake_idle(context)  # wakes the threads waiting on idle kept connections
        try:
            server.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked in accept()
        except OSError:
            pass
        for t in workers:
            t.join(SHUTDOWN_JOIN / context.threads)


def _exit(code):
    _flush_app_output()
    # Threads the app started itself must not keep the process alive for long.
    timer = threading.Timer(EXIT_GRACE, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
    sys.exit(code)


def _on_sigterm(signum, frame):
    raise SystemExit(0)


def main():
    _setup_stdio()
    ctl = _take_stdin()
    options = _read_options(ctl)
    threads = _thread_count(options)
    password = (options.get('connect_password') or '').encode('utf-8', 'surrogateescape')
    base_uri = _base_uri(options)
    app = _load_app(options)
    server, path = _create_server(options)
    context = _Context(app, password, base_uri, threads, path)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    try:
        if threads == 1:
            _protocol('Ready', 'socket: main;unix:%s;session;1' % path, 'prefetch: 1', '')
            _serve_in_turn(server, ctl, context, 2)
        else:
            _protocol('Ready', 'socket: main;unix:%s;session;%d' % (path, threads), '')
            _serve_threaded(server, ctl, context)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as e:  # SIGTERM, or the app called sys.exit()
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        server.close()
    _exit(code)


if __name__ == '__main__':
    main()
