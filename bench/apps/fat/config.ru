# Benchmark app: allocates and touches 50 MB while loading (a stand-in for a big framework),
# then answers with its pid.
BALLAST = Array.new(50) { 'x' * (1024 * 1024) }.freeze
run ->(_env) { [200, { 'content-type' => 'text/plain' }, ["#{Process.pid}\n"]] }
