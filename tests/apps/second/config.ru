# Test app: a second app served beside the first.
run lambda { |env| [200, { 'content-type' => 'text/plain', 'x-pid' => Process.pid.to_s }, ["hello from the second app\n"]] }
