# frozen_string_literal: true
#
# The Rack app of tests/loaders/rack_loaders_test.rb's request matrix. Everything outside /raw/
# goes through Rack::Lint, which checks the loader's env and the app's responses against the
# SPEC of the Rack version loaded (2.2 from Debian, or 3.x). Response header names are lower
# case, as Rack 3 requires (and Rack 2 allows).
#
#   /env...            the env, as JSON (also any path no other route takes)
#   /form              POST form fields, parsed by Rack::Request, as JSON
#   /upload            size and SHA-256 of rack.input, read twice around a rewind
#   /text              a small text body (also for HEAD: the loader must not send it)
#   /status/NNN        an empty response with that status (204, 304)
#   /cookies           two set-cookie values
#   /stream?socket=P   an each-body: "first\n", then waits for a line on the unix socket P
#                      (which the test writes only after it has received "first"), then "second\n"
#   /big?mb=N          N MiB, chunk i made of byte (i % 251), with content-length
#   /close-probe?id=X  a body that records its close under X, and a rack.response_finished
#                      callback that records its call
#   /each-raises?id=X  a body that fails in each after its first chunk (and records its close)
#   /app-raises        the app raises
#   /closed            the ids of the bodies closed so far, as JSON
#   /finished          the rack.response_finished calls of /close-probe so far, as JSON
#   /partial-hijack    partial hijack: a rack.hijack response header that writes the body
#   /hijack            full hijack: writes a response itself, then echoes one line from another
#                      thread after call has returned
#   /slow?id=X&n=N     waits (at most 5 s) until N requests with that id are in the app at the
#                      same time; answers its start and end times
#   /oob               asks for out-of-band work
#   /oob-runs          how often :oob_work ran, and whether the app ever saw an OOBW request
#   /raw/to-path?id=X  (no Lint) a body whose to_path is a 3 MiB file and whose each gives
#                      something else, so that the answer shows which one the loader used
#   /raw/call?id=X     (no Lint) a Rack 3 streaming body: responds to call only
#   /raw/big-array     (no Lint) an Array body of 120 KB without content-length
#   /raw/array-headers (no Lint) header values given as Arrays, the Rack 3 way
#   /raw/short-length?kind=K  (no Lint) "0123456789" with a content-length of 15, the body
#   /raw/long-length?kind=K   being an Array (K = array), an each-only body in two chunks of 5
#                      (each) or a to_path file (file); long-length: a content-length of 7
require 'json'
require 'digest'
require 'socket'

RACK3 = Rack.release.to_i >= 3
$closed = []
$finished = []
$oob_runs = 0
$oobw_reached_app = false
$barrier = Hash.new(0)
$barrier_lock = Mutex.new
$barrier_changed = ConditionVariable.new

PhusionPassenger.on_event(:oob_work) { $oob_runs += 1 }

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def json(status, data, extra = {})
  body = JSON.generate(data)
  [status, { 'content-type' => 'application/json', 'content-length' => body.bytesize.to_s }.merge(extra), [body]]
end

def text(body, extra = {})
  [200, { 'content-type' => 'text/plain', 'content-length' => body.bytesize.to_s }.merge(extra), [body]]
end

def query(env)
  Rack::Utils.parse_query(env['QUERY_STRING'])
end

def printable(value)
  case value
  when String then value.dup.force_encoding(Encoding::UTF_8).scrub
  when true, false, nil, Integer then value
  when Array then value.map { |v| printable(v) }
  else value.class.name
  end
end

# The CGI part of the env, and what the rack.* keys are.
def env_report(env)
  report = env.reject { |k, _| k.include?('.') }.transform_values { |v| printable(v) }
  input = env['rack.input']
  report.merge(
    'rack.version' => env['rack.version'], 'rack.url_scheme' => env['rack.url_scheme'],
    'rack.multithread' => env['rack.multithread'], 'rack.multiprocess' => env['rack.multiprocess'],
    'rack.run_once' => env['rack.run_once'], 'rack.hijack?' => env['rack.hijack?'],
    'rack.hijack callable' => env['rack.hijack'].respond_to?(:call),
    'rack.input rewindable' => input.respond_to?(:rewind),
    'rack.errors is stderr' => env['rack.errors'].respond_to?(:puts),
    'rack.response_finished' => env['rack.response_finished'].class.name,
    'rack' => Rack.release, 'pid' => Process.pid
  )
end

class ClosingBody
  def initialize(id, chunks, fail_after: nil)
    @id = id
    @chunks = chunks
    @fail_after = fail_after
  end

  def each
    @chunks.each_with_index do |chunk, i|
      raise 'this body fails on purpose' if @fail_after == i

      yield chunk
    end
  end

  def close
    $closed << @id
  end
end

class StreamingEachBody
  def initialize(socket_path)
    @socket_path = socket_path
  end

  def each
    yield "first\n"
    UNIXSocket.open(@socket_path, &:gets)
    yield "second\n"
  end
end

class BigBody
  MIB = 1024 * 1024

  def initialize(mib)
    @mib = mib
  end

  def each
    @mib.times { |i| yield((i % 251).chr * MIB) }
  end
end

# Violates the SPEC on purpose: each and to_path differ, to show which one was used.
class FileBody
  def initialize(id, path)
    @id = id
    @path = path
  end

  def to_path
    @path
  end

  def each
    yield "each was used instead of to_path\n"
  end

  def close
    $closed << @id
  end
end

class CallBody
  def initialize(id)
    @id = id
  end

  def call(stream)
    stream.write("part 1\n")
    stream.flush
    stream << "part 2\n"
    stream.close
  end

  def close
    $closed << @id
  end
end

# Only each: no to_ary, no to_path, so the loader streams it.
class EachOnlyBody
  def initialize(chunks)
    @chunks = chunks
  end

  def each(&block)
    @chunks.each(&block)
  end
end

def wait_for_peers(id, count)
  deadline = now + 5
  $barrier_lock.synchronize do
    $barrier[id] += 1
    $barrier_changed.broadcast
    while $barrier[id] < count && (left = deadline - now) > 0
      $barrier_changed.wait($barrier_lock, left)
    end
    $barrier[id]
  end
end

def file_for_to_path
  path = File.join(Dir.pwd, 'to-path.bin')
  File.binwrite(path, Array.new(3 * 1024) { |i| (i % 256).chr * 1024 }.join) unless File.exist?(path)
  path
end

checked = lambda do |env|
  $oobw_reached_app = true if env['REQUEST_METHOD'] == 'OOBW'
  q = query(env)
  case env['PATH_INFO']
  when '/form'
    json(200, Rack::Request.new(env).POST)
  when '/upload'
    input = env['rack.input']
    first = Digest::SHA256.new
    size = 0
    while (chunk = input.read(65_536))
      size += chunk.bytesize
      first << chunk
    end
    input.rewind
    second = Digest::SHA256.hexdigest(input.read)
    json(200, 'size' => size, 'sha256' => first.hexdigest, 'sha256_after_rewind' => second)
  when '/text'
    text("some text\n")
  when %r{\A/status/(\d+)\z}
    [Regexp.last_match(1).to_i, Regexp.last_match(1) == '304' ? { 'etag' => '"v1"' } : {}, []]
  when '/cookies'
    [200, { 'content-type' => 'text/plain', 'set-cookie' => RACK3 ? %w[a=1 b=2] : "a=1\nb=2" }, ['cookies']]
  when '/stream'
    [200, { 'content-type' => 'text/plain' }, StreamingEachBody.new(q['socket'])]
  when '/big'
    mib = q['mb'].to_i
    [200, { 'content-type' => 'application/octet-stream', 'content-length' => (mib * BigBody::MIB).to_s },
     BigBody.new(mib)]
  when '/close-probe'
    id = q['id']
    env['rack.response_finished'] << lambda { |_env, status, _headers, error|
      $finished << [id, status, error&.message]
    }
    [200, { 'content-type' => 'text/plain' }, ClosingBody.new(id, ["closing body\n"])]
  when '/each-raises'
    [200, { 'content-type' => 'text/plain' }, ClosingBody.new(q['id'], ["one\n", "two\n"], fail_after: 1)]
  when '/app-raises'
    raise 'this app fails on purpose'
  when '/closed'
    json(200, $closed)
  when '/finished'
    json(200, $finished)
  when '/partial-hijack'
    [200, { 'content-type' => 'text/plain', 'rack.hijack' => lambda { |io|
      io.write("partial\n")
      io.close
    } }, []]
  when '/hijack'
    io = env['rack.hijack'].call
    io.write("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-hijacked: yes\r\nconnection: close\r\n\r\nhijacked\n")
    # The app returns at once and answers from another thread: the loader must not close the
    # connection under it.
    Thread.new do
      line = io.gets
      io.write("echo: #{line}")
      io.close
    end
    [200, {}, []]
  when '/slow'
    started = now
    together = wait_for_peers(q['id'], q['n'].to_i)
    json(200, 'pid' => Process.pid, 'start' => started, 'end' => now, 'together' => together,
              'multithread' => env['rack.multithread'])
  when '/oob'
    text("oob requested\n", RACK3 ? { '!~request-oob-work' => 'true' } : { '!~Request-OOB-Work' => 'true' })
  when '/oob-runs'
    json(200, 'oob_runs' => $oob_runs, 'oobw_reached_app' => $oobw_reached_app)
  else
    json(200, env_report(env))
  end
end

raw = lambda do |env|
  q = query(env)
  case env['PATH_INFO']
  when '/raw/to-path'
    [200, { 'content-type' => 'application/octet-stream' }, FileBody.new(q['id'], file_for_to_path)]
  when '/raw/call'
    [200, { 'content-type' => 'text/plain' }, CallBody.new(q['id'])]
  when '/raw/big-array'
    # Three 40 KB chunks, no content-length: more than the loader sends with the head.
    [200, { 'content-type' => 'application/octet-stream' }, %w[a b c].map { |c| c * (40 * 1024) }]
  when '/raw/array-headers'
    [200, { 'content-type' => 'text/plain', 'x-multi' => %w[one two] }, ['arrays']]
  when '/raw/short-length', '/raw/long-length'
    digits = '0123456789'
    body = case q['kind']
           when 'each' then EachOnlyBody.new([digits[0, 5], digits[5, 5]])
           when 'file'
             path = File.join(Dir.pwd, 'digits.txt')
             File.write(path, digits)
             FileBody.new('digits', path)
           else [digits]
           end
    length = env['PATH_INFO'] == '/raw/short-length' ? 15 : 7
    [200, { 'content-type' => 'text/plain', 'content-length' => length.to_s }, body]
  else
    [404, { 'content-type' => 'text/plain' }, ["no such raw route\n"]]
  end
end

linted = Rack::Lint.new(checked)
run(lambda do |env|
  env['PATH_INFO'].start_with?('/raw/') ? raw.call(env) : linted.call(env)
end)
