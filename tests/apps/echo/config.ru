# Test app: each path shows one thing the end-to-end tests check.
app = lambda do |env|
  case env['PATH_INFO']
  when '/'
    [200, { 'content-type' => 'text/plain', 'x-pid' => Process.pid.to_s }, ["hello from rack\n"]]
  when '/echo'
    body = env['rack.input'].read
    [200, { 'content-type' => 'application/octet-stream', 'x-received-length' => body.bytesize.to_s }, [body]]
  when '/query'
    [200, { 'content-type' => 'text/plain' }, [env['QUERY_STRING']]]
  when '/missing'
    [404, { 'content-type' => 'text/plain' }, ["no such thing\n"]]
  when '/redirect'
    [302, { 'location' => 'http://example.org/target', 'content-type' => 'text/plain' }, ['moved']]
  when '/headers'
    [200, { 'x-custom' => 'custom value', 'content-type' => 'text/plain' }, ["header echo: #{env['HTTP_X_TEST_REQUEST']}"]]
  when '/log'
    puts "app says hello on stdout"
    $stderr.puts "app says hello on stderr"
    [200, { 'content-type' => 'text/plain' }, ['logged']]
  else
    [404, { 'content-type' => 'text/plain' }, ["unknown path #{env['PATH_INFO']}\n"]]
  end
end
run app
