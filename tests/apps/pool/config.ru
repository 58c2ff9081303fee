# Test app for the pool tests: every response names the process that served it.
#   /            its pid
#   /wait?file=F[&started=S]   writes S (if given), then holds the request until file F
#                exists (at most 60 s): a slow request the test releases when it wants
#   /slow?secs=N sleeps N seconds
require 'uri'

run(lambda do |env|
  query = URI.decode_www_form(env['QUERY_STRING'] || '').to_h
  case env['PATH_INFO']
  when '/wait'
    File.write(query['started'], Process.pid.to_s) if query['started']
    deadline = Time.now + 60
    sleep 0.02 until File.exist?(query['file'].to_s) || Time.now > deadline
  when '/slow'
    sleep query.fetch('secs', '1').to_f
  end
  [200, { 'content-type' => 'text/plain', 'x-pid' => Process.pid.to_s }, ["#{Process.pid}\n"]]
end)
