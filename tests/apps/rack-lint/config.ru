# Test app for tests/conformance.rs: a Rack app wrapped in Rack::Lint, so that anything the
# server hands it (the env, rack.input, rack.errors) or does with its response (each, close)
# that breaks the Rack spec raises Rack::Lint::LintError, failing the request with a 500 and
# leaving the error in the log. Every path shows one cell of the request matrix.
require 'rack'
# Rack 2.2's Rack::Lint checks SERVER_NAME and HTTP_HOST with URI.parse but does not require
# 'uri' itself (servers like WEBrick load it): without this, every request fails Lint.
require 'uri'
require 'zlib'

RACK3 = Rack.release.to_i >= 3

# Multi-value headers: newline-separated in Rack 2, an Array in Rack 3.
def multi(*values)
  RACK3 ? values : values.join("\n")
end

def text(body, status = 200, headers = {})
  [status, { 'content-type' => 'text/plain; charset=utf-8' }.merge(headers), [body]]
end

# The request body, read the way apps do: in pieces, through rack.input#read(length).
def read_input(env)
  input = env['rack.input']
  data = String.new(encoding: Encoding::BINARY)
  while (piece = input.read(65_536))
    data << piece
  end
  data
end

# /stream: one chunk, then nothing until the test creates the gate file (or a minute passed),
# then the rest. A chunk the client sees before it opens the gate was not buffered on the way.
class GatedStream
  def initialize(gate)
    @gate = gate
  end

  def each
    yield "first chunk\n"
    deadline = Time.now + 60
    sleep 0.02 until File.exist?(@gate) || Time.now > deadline
    (1..9).each { |i| yield "chunk #{i}\n" }
    yield "last chunk\n"
  end
end

# /large: 50 blocks of 1 MiB; block k is a byte pattern that starts with k as 8 digits.
BLOCK = (0...(1 << 20)).map { |i| i * 7 % 251 }.pack('C*').freeze
LARGE_BLOCKS = 50

class LargeBody
  def each
    LARGE_BLOCKS.times { |k| yield format('%08d', k) + BLOCK.byteslice(8..) }
  end
end

LARGE_CRC = LargeBody.new.enum_for(:each).reduce(0) { |crc, block| Zlib.crc32(block, crc) }

HEAD_BODY = "the body of GET /head\n"

app = lambda do |env|
  req = Rack::Request.new(env)
  case env['PATH_INFO']
  when '/query'
    parsed = Rack::Utils.parse_query(env['QUERY_STRING']).map { |k, v| "#{k}=#{v}\n" }.join
    text("QUERY_STRING=#{env['QUERY_STRING']}\n#{parsed}")
  when '/form'
    form = req.POST
    text("CONTENT_TYPE=#{env['CONTENT_TYPE']}\n" + form.map { |k, v| "#{k}=#{v}\n" }.join)
  when '/upload'
    form = req.POST
    file = form['file']
    tempfile = file[:tempfile]
    tempfile.rewind
    crc = 0
    size = 0
    while (piece = tempfile.read(65_536))
      crc = Zlib.crc32(piece, crc)
      size += piece.bytesize
    end
    text("description=#{form['description']}\nfilename=#{file[:filename]}\n" \
         "type=#{file[:type]}\nsize=#{size}\ncrc32=#{format('%08x', crc)}\n")
  when '/body'
    body = read_input(env)
    [200, { 'content-type' => 'application/octet-stream',
            'x-content-length' => env['CONTENT_LENGTH'] || '(none)',
            'x-received-length' => body.bytesize.to_s }, [body]]
  when '/head'
    headers = { 'content-type' => 'text/plain', 'content-length' => HEAD_BODY.bytesize.to_s,
                'x-custom' => 'same for HEAD' }
    # The app answers HEAD with an empty body itself (Rack::Lint insists).
    [200, headers, env['REQUEST_METHOD'] == 'HEAD' ? [] : [HEAD_BODY]]
  when '/status/204'
    [204, { 'x-note' => 'no content' }, []]
  when '/status/304'
    [304, { 'etag' => '"v1"' }, []]
  when '/stream'
    [200, { 'content-type' => 'text/plain' }, GatedStream.new(Rack::Utils.parse_query(env['QUERY_STRING'])['gate'])]
  when '/large'
    [200, { 'content-type' => 'application/octet-stream',
            'content-length' => (LARGE_BLOCKS * BLOCK.bytesize).to_s,
            'x-crc32' => format('%08x', LARGE_CRC) }, LargeBody.new]
  when '/cookies'
    text("two cookies\n", 200, 'set-cookie' => multi('a=1; path=/', 'b=2; path=/'))
  when '/mark'
    # Through rack.errors to the log: once the mark is there, so is all the app wrote before.
    env['rack.errors'].puts("conformance mark #{env['QUERY_STRING']}")
    env['rack.errors'].flush
    text("marked\n")
  when '/violation'
    # Checks that Lint is in force: a 'status' header breaks the spec.
    text("a Lint violation\n", 200, 'status' => '200')
  else
    # Rack's PATH_INFO is the path as the client sent it, still percent-encoded.
    text("PATH_INFO=#{env['PATH_INFO']}\n")
  end
end

use Rack::Lint
run app
