# Benchmark app for the pool scenario: every request takes 50 ms and says which process served
# it and when it started being served (so the client can compute how long it queued).
run lambda { |_env|
  started = Process.clock_gettime(Process::CLOCK_REALTIME)
  sleep 0.05
  [200, { 'content-type' => 'text/plain', 'x-pid' => Process.pid.to_s, 'x-started' => format('%.6f', started) }, ["ok\n"]]
}
