# Test app for tests/conformance.rs: a WSGI app wrapped in wsgiref.validate.validator, so that
# anything the server hands it (environ, wsgi.input, wsgi.errors) or does with its response
# (iteration, close) that breaks PEP 3333 raises an AssertionError, failing the request with a
# 500 and leaving the error in the log. The validator's warnings (WSGIWarning) are made errors
# too. Every path shows one cell of the request matrix.
import os
import time
import warnings
import zlib
from urllib.parse import parse_qsl
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter('error', WSGIWarning)


def read_input(environ):
    """The request body, read as PEP 3333 says: CONTENT_LENGTH bytes, in pieces."""
    remaining = int(environ.get('CONTENT_LENGTH') or 0)
    pieces = []
    while remaining > 0:
        piece = environ['wsgi.input'].read(min(remaining, 65536))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b''.join(pieces)


def parse_multipart(body, content_type):
    """{name: (filename, content type, data)} of a multipart/form-data body."""
    boundary = None
    for param in content_type.split(';')[1:]:
        key, _, value = param.strip().partition('=')
        if key.lower() == 'boundary':
            boundary = value.strip('"').encode('latin-1')
    assert boundary, 'no boundary in %r' % content_type
    fields = {}
    for part in body.split(b'--' + boundary)[1:]:
        if part.startswith(b'--'):
            break  # the closing delimiter
        head, _, data = part[2:].partition(b'\r\n\r\n')  # after the delimiter's CRLF
        data = data[:-2]  # the CRLF before the next delimiter
        name = filename = None
        ctype = 'text/plain'
        for line in head.decode('utf-8').split('\r\n'):
            key, _, value = line.partition(':')
            if key.lower() == 'content-disposition':
                for param in value.split(';')[1:]:
                    k, _, v = param.strip().partition('=')
                    if k == 'name':
                        name = v.strip('"')
                    elif k == 'filename':
                        filename = v.strip('"')
            elif key.lower() == 'content-type':
                ctype = value.strip()
        fields[name] = (filename, ctype, data)
    return fields


BLOCK = bytes(i * 7 % 251 for i in range(1 << 20))
LARGE_BLOCKS = 50


def large_blocks():
    """50 blocks of 1 MiB; block k is a byte pattern that starts with k as 8 digits."""
    for k in range(LARGE_BLOCKS):
        yield b'%08d' % k + BLOCK[8:]


LARGE_CRC = 0
for _block in large_blocks():
    LARGE_CRC = zlib.crc32(_block, LARGE_CRC)

HEAD_BODY = b'the body of GET /head\n'


def gated_stream(gate):
    """One chunk, then nothing until the test creates the gate file (or a minute passed), then
    the rest. A chunk the client sees before it opens the gate was not buffered on the way."""
    yield b'first chunk\n'
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in range(1, 10):
        yield b'chunk %d\n' % i
    yield b'last chunk\n'


def text(start_response, body, status='200 OK', headers=()):
    start_response(status, [('Content-Type', 'text/plain; charset=utf-8')] + list(headers))
    return [body.encode('utf-8')]


def app(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/query':
        query = environ['QUERY_STRING']
        parsed = ''.join('%s=%s\n' % kv for kv in parse_qsl(query))
        return text(start_response, 'QUERY_STRING=%s\n%s' % (query, parsed))
    if path == '/form':
        body = read_input(environ).decode('ascii')
        pairs = ''.join('%s=%s\n' % kv for kv in parse_qsl(body))
        return text(start_response, 'CONTENT_TYPE=%s\n%s' % (environ.get('CONTENT_TYPE'), pairs))
    if path == '/upload':
        fields = parse_multipart(read_input(environ), environ['CONTENT_TYPE'])
        filename, ctype, data = fields['file']
        return text(start_response,
                    'description=%s\nfilename=%s\ntype=%s\nsize=%d\ncrc32=%08x\n'
                    % (fields['description'][2].decode('utf-8'), filename, ctype, len(data),
                       zlib.crc32(data)))
    if path == '/body':
        body = read_input(environ)
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('X-Content-Length', environ.get('CONTENT_LENGTH', '(none)')),
                                  ('X-Received-Length', str(len(body)))])
        return [body]
    if path == '/head':
        start_response('200 OK', [('Content-Type', 'text/plain'),
                                  ('Content-Length', str(len(HEAD_BODY))),
                                  ('X-Custom', 'same for HEAD')])
        return [] if environ['REQUEST_METHOD'] == 'HEAD' else [HEAD_BODY]
    if path == '/status/204':
        start_response('204 No Content', [('X-Note', 'no content')])
        return []
    if path == '/status/304':
        start_response('304 Not Modified', [('ETag', '"v1"')])
        return []
    if path == '/stream':
        gate = dict(parse_qsl(environ['QUERY_STRING']))['gate']
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return gated_stream(gate)
    if path == '/large':
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(LARGE_BLOCKS * len(BLOCK))),
                                  ('X-Crc32', '%08x' % LARGE_CRC)])
        return large_blocks()
    if path == '/cookies':
        return text(start_response, 'two cookies\n',
                    headers=[('Set-Cookie', 'a=1; path=/'), ('Set-Cookie', 'b=2; path=/')])
    if path == '/mark':
        # Through wsgi.errors to the log: once the mark is there, so is all the app wrote before.
        environ['wsgi.errors'].write('conformance mark %s\n' % environ['QUERY_STRING'])
        environ['wsgi.errors'].flush()
        return text(start_response, 'marked\n')
    if path == '/violation':
        # Checks that the validator is in force: a 'Status' header breaks PEP 3333.
        return text(start_response, 'a validator violation\n', headers=[('Status', '200')])
    # WSGI's PATH_INFO is the decoded path, its bytes as a latin-1 str (a "native string");
    # shown here as UTF-8 text.
    return text(start_response, 'PATH_INFO=%s\n' % path)


application = validator(app)
