# The example app that the README's first command serves with `passenger start`.
run lambda { |env|
  body = "Hello from passenger-rs! You asked for #{env['PATH_INFO']}\n"
  [200, { 'content-type' => 'text/plain' }, [body]]
}
