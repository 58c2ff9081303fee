# Test app for tests/module_directives.rs (what the nginx module hands the app):
#   /env              the CGI variables the tests look at, then every HTTP_* one, `K=V` lines
#   /sha?             reads the body in 64 KiB pieces: "<length> <sha256>"
#   /first-bytes?F    writes file F as soon as the first body bytes arrived, then reads the rest
#   /bytes?n=N&cl=0|1 N bytes of a known pattern, with (cl=1) or without Content-Length
#   /status?N         answers status N with the body "app status N"
#   /sleep?N          sleeps N seconds (fractions allowed), then answers "slept"
#   /hold?F           writes file F, then sleeps 1 s and answers "held"
#   /header?N         answers with an X-Big header of N bytes
#   /accel?H=V        answers with response header H: V and the body "from the app"
require 'digest'

PATTERN = ((0..255).map(&:chr).join * 256).b.freeze # 64 KiB

def pattern(n)
  Enumerator.new do |y|
    left = n
    while left > 0
      piece = left >= PATTERN.bytesize ? PATTERN : PATTERN.byteslice(0, left)
      y << piece
      left -= piece.bytesize
    end
  end
end

def text(body, status = 200, headers = {})
  [status, { 'content-type' => 'text/plain', 'x-pid' => Process.pid.to_s }.merge(headers), [body]]
end

app = lambda do |env|
  query = env['QUERY_STRING'].to_s
  case env['PATH_INFO']
  when '/env'
    keys = %w[SCRIPT_NAME PATH_INFO REQUEST_URI QUERY_STRING DOCUMENT_ROOT CONTENT_LENGTH
              SERVER_PROTOCOL REMOTE_ADDR HTTPS]
    lines = keys.map { |k| "#{k}=#{env[k]}" }
    lines += env.keys.grep(/\AHTTP_/).sort.map { |k| "#{k}=#{env[k]}" }
    text(lines.join("\n") + "\n")
  when '/sha'
    input = env['rack.input']
    digest = Digest::SHA256.new
    length = 0
    while (piece = input.read(65_536))
      digest << piece
      length += piece.bytesize
    end
    text("#{length} #{digest.hexdigest}")
  when '/first-bytes'
    input = env['rack.input']
    first = input.read(1)
    File.write(query, first.to_s)
    rest = input.read.to_s
    text("#{first.to_s.bytesize + rest.bytesize}")
  when '/bytes'
    params = query.split('&').map { |kv| kv.split('=', 2) }.to_h
    n = params['n'].to_i
    headers = { 'content-type' => 'application/octet-stream' }
    headers['content-length'] = n.to_s if params['cl'] == '1'
    [200, headers, pattern(n)]
  when '/status'
    text("app status #{query}", query.to_i)
  when '/sleep'
    sleep query.to_f
    text('slept')
  when '/hold'
    File.write(query, Process.pid.to_s)
    sleep 1
    text('held')
  when '/header'
    text('big header', 200, 'x-big' => 'h' * query.to_i)
  when '/accel'
    name, value = query.split('=', 2)
    text('from the app', 200, name.downcase => value.to_s)
  else
    text("module app: #{env['PATH_INFO']}", 404)
  end
end
run app
