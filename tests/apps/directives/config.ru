# Test app for tests/core_directives.rs: every response carries its pid (body and X-Pid).
#   /                      its pid
#   /big?mb=N&progress=P&done=D
#                          streams N MiB in 64 KiB chunks; writes P when the first chunk is
#                          out, and D once the whole body has been handed to the server
#   /sleep?secs=N          sleeps N seconds, then answers
#   /wait?file=F[&started=S]
#                          writes S (if given), then holds the request until file F exists
#                          (at most 60 s)
#   /grow?mb=N             keeps N MiB more private memory for the rest of its life
#   /bundler               whether Bundler is loaded: "loaded" or "not loaded"
# no-bundler/ holds a bundler/setup.rb that raises LoadError, for RUBYLIB.
require 'uri'

$kept = []

class BigBody
  CHUNK = ('x' * 65_536).freeze

  def initialize(mb, progress, done)
    @chunks = mb * 16
    @progress = progress
    @done = done
  end

  def each
    @chunks.times do |i|
      yield CHUNK
      File.write(@progress, Process.pid.to_s) if i.zero? && @progress
    end
    File.write(@done, Process.pid.to_s) if @done
  end
end

run(lambda do |env|
  query = URI.decode_www_form(env['QUERY_STRING'] || '').to_h
  headers = { 'content-type' => 'text/plain', 'x-pid' => Process.pid.to_s }
  case env['PATH_INFO']
  when '/big'
    mb = query.fetch('mb', '1').to_i
    headers['content-length'] = (mb * 1_048_576).to_s
    return [200, headers, BigBody.new(mb, query['progress'], query['done'])]
  when '/sleep'
    sleep query.fetch('secs', '1').to_f
  when '/wait'
    File.write(query['started'], Process.pid.to_s) if query['started']
    deadline = Time.now + 60
    sleep 0.02 until File.exist?(query['file'].to_s) || Time.now > deadline
  when '/bundler'
    return [200, headers, [defined?(::Bundler) ? 'loaded' : 'not loaded']]
  when '/grow'
    # Written to, so that the pages are the process's own (private dirty).
    $kept << ('y' * (query.fetch('mb', '1').to_i * 1_048_576))
  end
  [200, headers, ["#{Process.pid}\n"]]
end)
