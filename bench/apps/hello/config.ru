# Hello-world Rack app for the benchmarks (bench/hello-rack, bench/compare): the same file runs
# under passenger-rs, Phusion Passenger and puma. Every response names its process in X-Pid.
#   /       "hello world\n"
#   /100k   a 100 KB body
#   /sleep  answers after 50 ms
HELLO = "hello world\n".freeze
BODY_100K = ('x' * 102_399 + "\n").freeze
run lambda { |env|
  headers = { 'content-type' => 'text/plain', 'x-pid' => Process.pid.to_s }
  case env['PATH_INFO']
  when '/100k' then [200, headers, [BODY_100K]]
  when '/sleep'
    sleep 0.05
    [200, headers, [HELLO]]
  else [200, headers, [HELLO]]
  end
}
