# Test app for the Rack loader's features through nginx:
#   /slow        sleeps 0.5 s; answers "pid start end" (monotonic seconds): threads overlap
#   /oob         asks for out-of-band work (Passenger's response header)
#   /oob-count   how many times the :oob_work callback ran in this process
#   /hijack      full hijack: answers 101 itself, then echoes each line it reads
#   /big?MB      an MB-megabyte body
$oob_count = 0
PhusionPassenger.on_event(:oob_work) { $oob_count += 1 } if defined?(PhusionPassenger)

app = lambda do |env|
  case env['PATH_INFO']
  when '/slow'
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    sleep 0.5
    t1 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    [200, { 'content-type' => 'text/plain' }, ["#{Process.pid} #{t0} #{t1} #{env['rack.multithread']}"]]
  when '/oob'
    [200, { 'content-type' => 'text/plain', '!~Request-OOB-Work' => 'true' }, ['oob requested']]
  when '/big'
    mb = env['QUERY_STRING'].to_i
    [200, { 'content-type' => 'application/octet-stream', 'content-length' => (mb << 20).to_s },
     Array.new(mb) { 'x' * (1 << 20) }]
  when '/oob-count'
    [200, { 'content-type' => 'text/plain' }, [$oob_count.to_s]]
  when '/hijack'
    io = env['rack.hijack'].call
    io.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: line-echo\r\nConnection: Upgrade\r\n\r\n")
    io.flush
    while (line = io.gets)
      io.write("echo: #{line}")
      io.flush
    end
    io.close
    [-1, {}, []]
  else
    [404, { 'content-type' => 'text/plain' }, ['unknown']]
  end
end
run app
