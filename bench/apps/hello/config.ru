# Hello-world Rack app for the benchmarks.
run lambda { |_env| [200, { 'content-type' => 'text/plain' }, ["hello world\n"]] }
