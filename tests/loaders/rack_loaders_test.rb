# frozen_string_literal: true
#
# Drives loaders/rack-loader.rb and loaders/rack-preloader.rb for real: real ruby processes, a
# real Rack app, real unix sockets, the core's side of the handshake, of the session protocol
# and of the preloader's spawn commands played by this test.
#
#   ruby tests/loaders/rack_loaders_test.rb
#
# Every wait is bounded (WAIT seconds) and fails with what the processes said.

require 'minitest/autorun'
require 'socket'
require 'tmpdir'
require 'fileutils'
require 'securerandom'
require 'rbconfig'
require 'json'
require 'digest'

class RackLoadersTest < Minitest::Test
  LOADERS = File.expand_path('../../loaders', __dir__)
  WAIT = 15

  # The app answers with who it is, so that the test can tell processes apart, and records the
  # PhusionPassenger events it sees.
  CONFIG_RU = <<~'RUBY'
    $events = []
    PhusionPassenger.on_event(:starting_worker_process) { |forked| $events << forked }
    PhusionPassenger.on_event(:stopping_worker_process) do
      File.write(File.join($app_root, "stopped.#{Process.pid}"), 'stopped')
    end
    $app_root = Dir.pwd
    puts "app booting in #{Process.pid}"
    run lambda { |env|
      body = "pid=#{Process.pid} ppid=#{Process.ppid} forked=#{$events.inspect} path=#{env['PATH_INFO']}\n"
      [200, { 'Content-Type' => 'text/plain', 'Content-Length' => body.bytesize.to_s }, [body]]
    }
  RUBY

  BROKEN_CONFIG_RU = <<~'RUBY'
    raise 'this app is broken on purpose'
  RUBY

  # Lines from a pipe, each read with a deadline.
  class LineReader
    attr_reader :app_output

    def initialize(io, describe)
      @io = io
      @buf = +''.b
      @describe = describe # a lambda that says what the process printed, for failures
      @app_output = []
    end

    # The next line without its newline; nil at EOF.
    def gets(timeout = WAIT)
      deadline = now + timeout
      loop do
        if (i = @buf.index("\n"))
          line = @buf.slice!(0, i + 1)
          return line.chomp
        end
        chunk = @io.read_nonblock(4096, exception: false)
        case chunk
        when nil
          return @buf.empty? ? nil : @buf.slice!(0, @buf.size)
        when :wait_readable
          left = deadline - now
          if left <= 0 || IO.select([@io], nil, nil, left).nil?
            raise Minitest::Assertion, "No line within #{timeout}s; so far: #{@buf.inspect}\n#{@describe.call}"
          end
        else
          @buf << chunk
        end
      end
    end

    # The next protocol line (`!> ...`), keeping the app's own lines aside.
    def protocol_line
      loop do
        line = gets
        raise Minitest::Assertion, "EOF before a protocol line\n#{@describe.call}" if line.nil?
        return line if line.start_with?('!> ')

        @app_output << line
      end
    end

    # Everything up to EOF.
    def read_to_eof(timeout = WAIT)
      lines = []
      while (line = gets(timeout))
        lines << line
      end
      lines
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end

  # A loader or preloader started by the test (stderr: a file), or a child a preloader passed
  # back (stderr: the pipe it came with).
  Peer = Struct.new(:pid, :stdin, :stdout, :stderr, :socket, :password, :prefetch, keyword_init: true)

  def setup
    @tmp = Dir.mktmpdir('passenger-rs-loaders')
    @app = File.join(@tmp, 'app')
    @sockets = File.join(@tmp, 'sockets')
    FileUtils.mkdir_p([@app, @sockets])
    File.write(File.join(@app, 'config.ru'), CONFIG_RU)
    @started = [] # pids this test started or got from a preloader, to kill if a test fails
  end

  def teardown
    @started.each do |pid|
      Process.kill(:KILL, pid)
    rescue Errno::ESRCH, Errno::EPERM
      nil
    end
    @started.each do |pid|
      Process.wait(pid, Process::WNOHANG)
    rescue Errno::ECHILD
      nil
    end
    FileUtils.rm_rf(@tmp)
  end

  # --- the core's side -------------------------------------------------------------------------

  def start(script, env = {})
    in_r, in_w = IO.pipe
    out_r, out_w = IO.pipe
    err_path = File.join(@tmp, "#{script}.#{SecureRandom.hex(4)}.stderr")
    # The app's own Gemfile decides about Bundler, not the test runner's environment.
    env = { 'BUNDLE_GEMFILE' => nil }.merge(env)
    pid = Process.spawn(env, RbConfig.ruby, File.join(LOADERS, script),
                        chdir: @app, in: in_r, out: out_w, err: err_path)
    @started << pid
    in_r.close
    out_w.close
    in_w.sync = true
    describe = -> { "#{script} (pid #{pid}) stderr:\n#{File.exist?(err_path) ? File.read(err_path) : ''}" }
    Peer.new(pid: pid, stdin: in_w, stdout: LineReader.new(out_r, describe), stderr: err_path)
  end

  def options(password, extra = {})
    {
      'app_root' => @app, 'environment' => 'production', 'connect_password' => password,
      'socket_dir' => @sockets, 'base_uri' => '/', 'log_level' => '3', 'app_type' => 'rack',
      'passenger_root' => File.dirname(LOADERS), 'passenger_version' => '0.0.0-test'
    }.merge(extra)
  end

  # Runs the handshake; returns the socket path the process reported. `kind` is main or spawn.
  # The `!> prefetch: N` line that may follow the socket line goes to `process.prefetch` (0
  # without it).
  def handshake(process, opts, kind: 'main', protocol: 'session', concurrency: 1)
    assert_equal '!> I have control 1.0', process.stdout.protocol_line
    process.stdin.write("You have control 1.0\n#{opts.map { |k, v| "#{k}: #{v}\n" }.join}\n")
    assert_equal '!> Ready', process.stdout.protocol_line
    socket_line = process.stdout.protocol_line
    match = /\A!> socket: #{kind};unix:(.+);#{protocol};#{concurrency}\z/.match(socket_line)
    assert match, "Unexpected socket line #{socket_line.inspect}"
    line = process.stdout.protocol_line
    process.prefetch = 0
    if (prefetch = /\A!> prefetch: (\d+)\z/.match(line))
      process.prefetch = Integer(prefetch[1])
      line = process.stdout.protocol_line
    end
    assert_equal '!> ', line
    process.socket = match[1]
    process.password = opts['connect_password']
    assert_equal 0o600, File.stat(process.socket).mode & 0o777, 'the socket must be private'
    process.socket
  end

  def read_all(io, timeout = WAIT)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    data = +''.b
    nil while fill(io, data, deadline, "The connection was not closed within #{timeout}s")
    data
  end

  # One session-protocol request; returns [status line, body].
  def request(process, path = '/', password: process.password)
    headers = {
      'REQUEST_METHOD' => 'GET', 'REQUEST_URI' => path, 'PATH_INFO' => path, 'QUERY_STRING' => '',
      'SCRIPT_NAME' => '', 'SERVER_NAME' => 'localhost', 'SERVER_PORT' => '80',
      'SERVER_PROTOCOL' => 'HTTP/1.1', 'REMOTE_ADDR' => '127.0.0.1', 'CONTENT_LENGTH' => '0',
      'PASSENGER_CONNECT_PASSWORD' => password
    }
    data = headers.map { |k, v| "#{k}\0#{v}\0" }.join
    UNIXSocket.open(process.socket) do |sock|
      sock.write([data.bytesize].pack('N') + data)
      response = read_response(sock)
      [response.status, response.body]
    end
  end

  # The app's self-description from its answer.
  def whoami(process, path = '/')
    status, body = request(process, path)
    assert_equal 'HTTP/1.1 200 OK', status, "body: #{body}"
    m = /\Apid=(\d+) ppid=(\d+) forked=(\S+) path=(\S*)\n\z/.match(body)
    assert m, "Unexpected body #{body.inspect}"
    { pid: m[1].to_i, ppid: m[2].to_i, forked: m[3], path: m[4] }
  end

  def encode_array(items)
    body = items.map { |i| "#{i}\0" }.join
    [body.bytesize].pack('n') + body
  end

  def decode_array(data)
    len = data.unpack1('n')
    assert_equal len, data.bytesize - 2, "Truncated MessageChannel array #{data.inspect}"
    items = data.byteslice(2, len).split("\0", -1)
    assert_equal '', items.pop, "The last item must end with NUL: #{data.inspect}"
    items
  end

  # Sends a spawn command; returns [reply items, the fds that came with it].
  def spawn_command(preloader, password = preloader.password)
    UNIXSocket.open(preloader.socket) do |sock|
      sock.write(encode_array(['spawn', password]))
      ready = IO.select([sock], nil, nil, WAIT)
      flunk "No answer to the spawn command within #{WAIT}s\n#{File.read(preloader.stderr)}" unless ready
      data, _addr, _flags, *controls = sock.recvmsg(65_536, 0, nil, scm_rights: true)
      items = decode_array(data)
      fds = controls.select { |c| c.cmsg_is?(:SOCKET, :RIGHTS) }.flat_map(&:unix_rights)
      rest = read_all(sock)
      assert_equal '', rest, 'the preloader must close the connection after its answer'
      [items, fds]
    end
  end

  # A spawn command that must succeed; returns the child, its handshake done.
  def spawn_child(preloader, extra = {}, concurrency: 1)
    items, fds = spawn_command(preloader)
    assert_equal 'ok', items[0], "spawn failed: #{items.inspect}\n#{File.read(preloader.stderr)}"
    assert_equal 2, items.size
    pid = Integer(items[1])
    @started << pid
    assert_equal 3, fds.size, 'the preloader must pass stdin, stdout and stderr'
    child_in, child_out, child_err = fds
    child_in.sync = true
    describe = -> { "child #{pid} stderr: #{child_err.read_nonblock(65_536, exception: false).inspect}" }
    child = Peer.new(pid: pid, stdin: child_in, stdout: LineReader.new(child_out, describe), stderr: child_err)
    # Fresh password and socket dir for the child, as the core does.
    child_sockets = File.join(@tmp, "child-sockets-#{pid}")
    FileUtils.mkdir_p(child_sockets)
    path = handshake(child, options(SecureRandom.hex(16), extra.merge('socket_dir' => child_sockets)),
                     concurrency: concurrency)
    assert_equal child_sockets, File.dirname(path), "the child must use its own socket_dir"
    child
  end

  # Waits for a process this test started to exit; returns its status.
  def wait_exit(process, what, timeout = WAIT)
    waiter = Thread.new { Process.wait2(process.pid)[1] }
    unless waiter.join(timeout)
      flunk "#{what} (pid #{process.pid}) did not exit within #{timeout}s\n#{File.read(process.stderr)}"
    end
    @started.delete(process.pid)
    waiter.value
  end

  # Polls a condition until it holds or WAIT runs out (for what the test cannot wait on directly,
  # such as a grandchild being reaped).
  def wait_until(message)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + WAIT
    until yield
      flunk "#{message} (waited #{WAIT}s)" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      sleep 0.02
    end
  end

  # Gone for good: exited and reaped (a zombie still has its /proc entry).
  def process_gone?(pid)
    !File.exist?("/proc/#{pid}")
  end

  def start_preloader(extra = {}, env = {})
    preloader = start('rack-preloader.rb', env)
    handshake(preloader, options(SecureRandom.hex(16), extra), kind: 'spawn', protocol: 'preloader',
                                                               concurrency: 0)
    assert_match %r{/preloader\.[0-9a-f]{16}\z}, preloader.socket
    preloader
  end

  # --- the direct loader -----------------------------------------------------------------------

  def test_direct_loader_serves_until_stdin_closes
    loader = start('rack-loader.rb')
    path = handshake(loader, options(SecureRandom.hex(16)))
    assert_match %r{\A#{Regexp.escape(@sockets)}/ruby\.[0-9a-f]{16}\z}, path

    me = whoami(loader, '/hello')
    assert_equal loader.pid, me[:pid]
    assert_equal Process.pid, me[:ppid]
    assert_equal '[false]', me[:forked], 'starting_worker_process is called once, with forked = false'
    assert_equal '/hello', me[:path]
    assert_includes loader.stdout.app_output, "app booting in #{loader.pid}"

    status, = request(loader, '/', password: 'wrong')
    assert_equal '', status, 'a wrong connect password gets no answer'

    loader.stdin.close
    assert_equal 0, wait_exit(loader, 'the loader').exitstatus
    refute File.exist?(path), 'the loader removes its socket'
    assert File.exist?(File.join(@app, "stopped.#{loader.pid}")), 'stopping_worker_process was called'
  end

  # An app (or a gem through RUBYOPT) that brings its own PhusionPassenger keeps it, and the
  # loader's events go through it.
  def test_direct_loader_keeps_a_predefined_phusion_passenger
    predefined = File.join(@tmp, 'predefined.rb')
    File.write(predefined, <<~'RUBY')
      module PhusionPassenger
        @callbacks = Hash.new { |h, k| h[k] = [] }
        def self.on_event(name, &block)
          @callbacks[name] << block
        end

        def self.call_event(name, *args)
          File.open(File.join(Dir.pwd, 'events.log'), 'a') { |f| f.puts("#{name} #{args.inspect}") }
          @callbacks[name].each { |c| c.call(*args) }
        end
      end
    RUBY
    loader = start('rack-loader.rb', 'RUBYOPT' => "-r#{predefined}")
    handshake(loader, options(SecureRandom.hex(16)))
    assert_equal '[false]', whoami(loader)[:forked]
    loader.stdin.close
    assert_equal 0, wait_exit(loader, 'the loader').exitstatus
    assert_equal "starting_worker_process [false]\nstopping_worker_process []\n",
                 File.read(File.join(@app, 'events.log'))
  end

  def test_direct_loader_reports_a_broken_app
    File.write(File.join(@app, 'config.ru'), BROKEN_CONFIG_RU)
    assert_error_block(start('rack-loader.rb'))
  end

  # --- the preloader ---------------------------------------------------------------------------

  def assert_error_block(process)
    assert_equal '!> I have control 1.0', process.stdout.protocol_line
    process.stdin.write("You have control 1.0\n#{options('pw').map { |k, v| "#{k}: #{v}\n" }.join}\n")
    assert_equal '!> Error', process.stdout.protocol_line
    assert_equal '!> html: false', process.stdout.protocol_line
    message = process.stdout.read_to_eof.join("\n")
    assert_match(/could not be loaded/, message)
    assert_match(/RuntimeError: this app is broken on purpose/, message)
    assert_equal 1, wait_exit(process, 'the failed loader').exitstatus
  end

  def test_preloader_spawns_ready_children
    preloader = start_preloader
    assert_includes preloader.stdout.app_output, "app booting in #{preloader.pid}",
                    "the app's output while preloading goes to the preloader's stdout"

    first = spawn_child(preloader)
    second = spawn_child(preloader)
    refute_equal first.pid, second.pid

    [first, second].each do |child|
      me = whoami(child, '/from-child')
      assert_equal child.pid, me[:pid]
      assert_equal preloader.pid, me[:ppid], 'a child is forked by the preloader'
      assert_equal '[true]', me[:forked], 'starting_worker_process is called once, with forked = true'
      assert_equal '/from-child', me[:path]
      assert_equal Process.getsid(child.pid), child.pid, 'a child leads its own session'
      assert_equal Process.getpgid(child.pid), child.pid, 'a child leads its own process group'
      assert_includes File.read("/proc/#{child.pid}/cmdline"), "Passenger RubyApp: #{@app} (production)"
    end
    assert_empty first.stdout.app_output, 'the app was loaded once, in the preloader'

    # Closing a child's stdin stops it; the preloader reaps it.
    first.stdin.close
    assert_empty first.stdout.read_to_eof, 'the child exits quietly'
    wait_until("child #{first.pid} was not reaped by the preloader") { process_gone?(first.pid) }
    @started.delete(first.pid)
    refute File.exist?(first.socket), 'the child removes its socket'
    assert File.exist?(File.join(@app, "stopped.#{first.pid}")), 'stopping_worker_process was called'
    refute File.exist?(File.join(@app, "stopped.#{preloader.pid}"))

    # The other child and the preloader carry on.
    assert_equal second.pid, whoami(second)[:pid]
    third = spawn_child(preloader)
    assert_equal third.pid, whoami(third)[:pid]
  end

  def test_preloader_refuses_a_wrong_password
    preloader = start_preloader
    items, fds = spawn_command(preloader, 'not the password')
    assert_equal %w[error wrong\ password], items
    assert_empty fds
    # It keeps serving the core.
    child = spawn_child(preloader)
    assert_equal child.pid, whoami(child)[:pid]
  end

  def test_preloader_exits_when_stdin_closes_and_children_live_on
    preloader = start_preloader
    child = spawn_child(preloader)

    preloader.stdin.close
    assert_equal 0, wait_exit(preloader, 'the preloader').exitstatus
    refute File.exist?(preloader.socket), 'the preloader removes its socket'

    me = whoami(child)
    assert_equal child.pid, me[:pid], 'the child still serves after the preloader is gone'
    refute_equal preloader.pid, me[:ppid]

    child.stdin.close
    assert_empty child.stdout.read_to_eof
    wait_until("child #{child.pid} did not exit") { process_gone?(child.pid) }
    @started.delete(child.pid)
  end

  def test_preloader_exits_when_idle
    preloader = start_preloader('max_preloader_idle_time' => '1')
    ready_at = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_equal 0, wait_exit(preloader, 'the idle preloader').exitstatus
    elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - ready_at
    assert_operator elapsed, :>=, 0.8, 'it waited for the idle time before exiting'
    refute File.exist?(preloader.socket), 'the preloader removes its socket'
    assert_match(/no spawn command for 1/, File.read(preloader.stderr))
  end

  def test_preloader_reports_a_broken_app
    File.write(File.join(@app, 'config.ru'), BROKEN_CONFIG_RU)
    assert_error_block(start('rack-preloader.rb'))
  end
  # --- the Rack SPEC, over the session protocol -------------------------------------------------

  CONFORMANCE_APP = File.join(__dir__, 'rack_conformance.ru')
  MIB = 1024 * 1024

  # kept: the response was delimited and the connection stayed open after it (read_response);
  # eof: the connection ended with it.
  Response = Struct.new(:status, :headers, :body, :head, :kept, :eof, keyword_init: true) do
    # All values of a header (case-insensitive name), in order.
    def values(name)
      headers.select { |k, _| k.casecmp?(name) }.map(&:last)
    end

    def json
      JSON.parse(body)
    end

    def close?
      values('connection').any? { |v| v.casecmp?('close') }
    end
  end

  def use_conformance_app
    FileUtils.cp(CONFORMANCE_APP, File.join(@app, 'config.ru'))
  end

  # The session header the core would send for `uri`: PATH_INFO is the decoded path (as nginx
  # gives it), REQUEST_URI the raw one.
  def session_header(process, method, uri, body, env)
    raw_path, query = uri.split('?', 2)
    {
      'CONTENT_LENGTH' => body.bytesize.to_s, 'SCGI' => '1', 'REQUEST_METHOD' => method,
      'REQUEST_URI' => uri, 'PATH_INFO' => RackEnvDecode.unescape(raw_path), 'QUERY_STRING' => query.to_s,
      'SCRIPT_NAME' => '', 'SERVER_NAME' => 'example.test', 'SERVER_PORT' => '8080',
      'SERVER_PROTOCOL' => 'HTTP/1.1', 'REMOTE_ADDR' => '127.0.0.1', 'REMOTE_PORT' => '50000',
      'DOCUMENT_ROOT' => File.join(@app, 'public'), 'HTTP_HOST' => 'example.test:8080',
      'HTTP_USER_AGENT' => 'rack-loaders-test'
    }.merge(env).merge('PASSENGER_CONNECT_PASSWORD' => process.password).compact
  end

  module RackEnvDecode
    def self.unescape(text)
      text.b.gsub(/%[0-9A-Fa-f]{2}/n) { |m| m[1, 2].hex.chr }
    end
  end

  # Sends one session-protocol request and returns the open connection, for tests that talk
  # on it further.
  def open_session(process, method: 'GET', uri: '/', body: ''.b, env: {})
    sock = UNIXSocket.new(process.socket)
    send_request(sock, process, method: method, uri: uri, body: body, env: env)
    sock
  end

  # Header and body in one write, as the core sends them: the loader's first read then takes
  # the start of the body too.
  def send_request(sock, process, method: 'GET', uri: '/', body: ''.b, env: {})
    header = session_header(process, method, uri, body, env).map { |k, v| "#{k}\0#{v}\0".b }.join
    sock.write([header.bytesize].pack('N') << header << body)
  end

  # One request on a connection that may have carried others; its one response.
  def exchange(sock, process, method: 'GET', uri: '/', body: ''.b, env: {})
    send_request(sock, process, method: method, uri: uri, body: body, env: env)
    read_response(sock, method)
  end

  # Reads exactly one response, as the core does: the head, then Content-Length bytes (none
  # for HEAD, 1xx, 204 and 304); up to EOF when the head says `Connection: close` or has no
  # single Content-Length. More bytes than the Content-Length are a failure. EOF before any
  # byte: a Response with an empty status.
  def read_response(sock, method = 'GET', timeout = WAIT)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    data = +''.b
    until (head_end = data.index("\r\n\r\n"))
      next if fill(sock, data, deadline)

      flunk "The connection ended inside a response head: #{data.inspect}" unless data.empty?
      return Response.new(status: '', headers: [], body: data, head: '', kept: false, eof: true)
    end
    response = parse_response(data.byteslice(0, head_end))
    body = data.byteslice(head_end + 4, data.bytesize)
    code = response.status.split(' ')[1].to_i
    lengths = response.values('content-length')
    length = if method == 'HEAD' || (code < 200 && code != 101) || code == 204 || code == 304 then 0
             elsif lengths.size == 1 then Integer(lengths.first, 10)
             end
    eof = false
    if length.nil? || response.close?
      body << read_all(sock, deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC))
      eof = true
    else
      eof = !fill(sock, body, deadline) while !eof && body.bytesize < length
      if body.bytesize > length
        flunk "#{body.bytesize} body bytes for a Content-Length of #{length}: #{body[0, 200].inspect}"
      end
    end
    response.body = body
    response.eof = eof
    response.kept = !eof
    response
  end

  # Appends what the connection has to `data`; false at EOF.
  def fill(sock, data, deadline, late = 'No complete response in time')
    loop do
      chunk = sock.read_nonblock(65_536, exception: false)
      case chunk
      when nil then return false
      when :wait_readable
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        flunk "#{late}; got #{data[0, 2000].inspect}" if left <= 0
        IO.select([sock], nil, nil, left)
      else
        data << chunk
        return true
      end
    end
  end

  def parse_response(data)
    head, body = data.split("\r\n\r\n", 2)
    lines = head.to_s.split("\r\n")
    headers = lines.drop(1).map { |l| l.split(': ', 2) }
    Response.new(status: lines.first.to_s, headers: headers, body: body.to_s, head: head.to_s)
  end

  # One request on a new connection, its response (read_response).
  def call_app(process, method: 'GET', uri: '/', body: ''.b, env: {})
    sock = open_session(process, method: method, uri: uri, body: body, env: env)
    read_response(sock, method)
  ensure
    sock&.close
  end

  # Lets the app's /stream request (waiting at `gate`, a UNIXServer) go on to its second chunk.
  def open_gate(gate)
    flunk 'the app never waited at the gate' unless IO.select([gate], nil, nil, WAIT)
    waiter = gate.accept
    waiter.write("go\n")
    waiter.close
  end

  # A /stream request on a new connection, which the app holds after its first chunk until
  # open_gate(gate): [gate, the connection, what it received so far].
  def hold_stream(loader)
    gate_path = File.join(@tmp, 'gate')
    gate = UNIXServer.new(gate_path)
    sock = open_session(loader, uri: "/stream?socket=#{gate_path}")
    [gate, sock, read_until(sock, "first\n")]
  end

  # Waits until the stopping loader refuses connections (it closed its socket).
  def wait_socket_closed(loader)
    wait_until('the stopping loader did not close its socket') do
      UNIXSocket.new(loader.socket).close
      false
    rescue Errno::ECONNREFUSED, Errno::ENOENT
      true
    end
  end

  # Reads from the connection until `marker` has arrived; returns everything read.
  def read_until(sock, marker, timeout = WAIT)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    data = +''.b
    until data.include?(marker)
      chunk = sock.read_nonblock(65_536, exception: false)
      case chunk
      when nil then flunk "The connection ended before #{marker.inspect}; got #{data.inspect}"
      when :wait_readable
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        flunk "No #{marker.inspect} within #{timeout}s; got #{data.inspect}" if left <= 0
        IO.select([sock], nil, nil, left)
      else data << chunk
      end
    end
    data
  end

  def start_conformance_loader(extra = {}, env = {}, concurrency: 1)
    use_conformance_app
    loader = start('rack-loader.rb', env)
    handshake(loader, options(SecureRandom.hex(16), extra), concurrency: concurrency)
    loader
  end

  def assert_ok(response, what)
    assert_equal 'HTTP/1.1 200 OK', response.status, "#{what}: #{response.head}\n#{response.body[0, 2000]}"
  end

  # The request matrix, through Rack::Lint, on a process that serves the conformance app.
  def run_request_matrix(process, stderr)
    check_env_and_query(process)
    check_post_form(process)
    check_large_upload(process)
    check_head_and_bodiless_statuses(process)
    check_streaming_each_body(process)
    check_large_response(process)
    check_multi_value_headers(process)
    check_content_length_of_array_bodies(process)
    check_to_path_and_call_bodies(process)
    check_close_is_always_called(process, stderr)
    check_full_hijack(process)
    check_out_of_band_work(process)
  end

  def check_env_and_query(process)
    response = call_app(process, uri: '/env/caf%C3%A9%20x%2Fy?a=1&b=caf%C3%A9',
                                 env: { 'HTTPS' => 'on', 'HTTP_X_CUSTOM' => 'custom value' })
    assert_ok response, 'GET with a query'
    env = response.json
    assert_equal 'GET', env['REQUEST_METHOD']
    assert_equal '', env['SCRIPT_NAME']
    assert_equal '/env/caf%C3%A9%20x%2Fy', env['PATH_INFO'], 'PATH_INFO is the raw, still percent-encoded path'
    assert_equal 'a=1&b=caf%C3%A9', env['QUERY_STRING']
    assert_equal 'example.test', env['SERVER_NAME']
    assert_equal '8080', env['SERVER_PORT']
    assert_equal 'HTTP/1.1', env['SERVER_PROTOCOL']
    assert_equal 'custom value', env['HTTP_X_CUSTOM']
    assert_equal 'example.test:8080', env['HTTP_HOST']
    assert_equal 'https', env['rack.url_scheme']
    refute env.key?('PASSENGER_CONNECT_PASSWORD'), 'the connect password is not shown to the app'
    assert_equal true, env['rack.multiprocess']
    assert_equal false, env['rack.run_once']
    assert_equal true, env['rack.hijack?']
    assert_equal true, env['rack.hijack callable']
    assert_equal true, env['rack.input rewindable']
    assert_equal 'Array', env['rack.response_finished']
    assert_kind_of Array, env['rack.version']

    plain = call_app(process, uri: '/env').json
    assert_equal '', plain['QUERY_STRING'], 'QUERY_STRING is always present'
    assert_equal 'http', plain['rack.url_scheme']
  end

  def check_post_form(process)
    body = 'name=J%C3%BCrgen+M&list=a&list=b&empty='.b
    response = call_app(process, method: 'POST', uri: '/form', body: body,
                                 env: { 'CONTENT_TYPE' => 'application/x-www-form-urlencoded' })
    assert_ok response, 'POST form'
    assert_equal({ 'name' => 'Jürgen M', 'list' => 'b', 'empty' => '' }, response.json)
  end

  def check_large_upload(process)
    body = Random.new(42).bytes(5 * MIB)
    response = call_app(process, method: 'POST', uri: '/upload', body: body,
                                 env: { 'CONTENT_TYPE' => 'application/octet-stream' })
    assert_ok response, '5 MB upload'
    digest = Digest::SHA256.hexdigest(body)
    assert_equal({ 'size' => body.bytesize, 'sha256' => digest, 'sha256_after_rewind' => digest }, response.json)
  end

  def check_head_and_bodiless_statuses(process)
    get = call_app(process, uri: '/text')
    assert_ok get, 'GET /text'
    assert_equal "some text\n", get.body
    head = call_app(process, method: 'HEAD', uri: '/text')
    assert_ok head, 'HEAD'
    assert_equal ['10'], head.values('content-length'), 'HEAD keeps the headers'
    assert_equal '', head.body, 'HEAD has no body'

    no_content = call_app(process, uri: '/status/204')
    assert_equal 'HTTP/1.1 204 No Content', no_content.status
    assert_equal '', no_content.body
    not_modified = call_app(process, uri: '/status/304')
    assert_equal 'HTTP/1.1 304 Not Modified', not_modified.status
    assert_equal ['"v1"'], not_modified.values('etag')
    assert_equal '', not_modified.body
  end

  # The first chunk must reach the client while the app still holds the rest back.
  def check_streaming_each_body(process)
    gate_path = File.join(@tmp, "gate.#{SecureRandom.hex(4)}")
    gate = UNIXServer.new(gate_path)
    sock = open_session(process, uri: "/stream?socket=#{gate_path}")
    received = read_until(sock, "first\n")
    refute_includes received, 'second', 'the second chunk cannot exist before the gate opens'
    open_gate(gate)
    response = parse_response(received + read_all(sock))
    assert_ok response, 'streaming each body'
    assert_equal "first\nsecond\n", response.body
  ensure
    sock&.close
    gate&.close
  end

  def check_large_response(process)
    response = call_app(process, uri: '/big?mb=50')
    assert_ok response, '50 MB response'
    assert_equal [(50 * MIB).to_s], response.values('content-length')
    assert_equal 50 * MIB, response.body.bytesize
    expected = Digest::SHA256.new
    50.times { |i| expected << ((i % 251).chr * MIB) }
    assert_equal expected.hexdigest, Digest::SHA256.hexdigest(response.body), 'the 50 MB body arrives intact'
  end

  # An Array body gets the Content-Length the app left out (so the core can keep its
  # connections); one the app gave is kept, alone; a streamed body gets none.
  def check_content_length_of_array_bodies(process)
    array = call_app(process, uri: '/raw/array-headers')
    assert_equal ['6'], array.values('content-length'), 'an Array body of 6 bytes'
    assert_equal 'arrays', array.body
    big = call_app(process, uri: '/raw/big-array')
    assert_equal [(120 * 1024).to_s], big.values('content-length'), 'an Array body of 120 KB'
    assert_equal %w[a b c].map { |c| c * (40 * 1024) }.join, big.body
    assert big.kept, 'the connection is kept after a large Array body'
    text = call_app(process, uri: '/text')
    assert_equal ['10'], text.values('content-length'), "the app's own Content-Length, once"
    stream = call_app(process, uri: '/raw/call')
    assert_empty stream.values('content-length'), 'a streaming body has no length'
  end

  def check_multi_value_headers(process)
    cookies = call_app(process, uri: '/cookies')
    assert_ok cookies, 'two Set-Cookie'
    assert_equal %w[a=1 b=2], cookies.values('set-cookie'), 'one header line per value'
    arrays = call_app(process, uri: '/raw/array-headers')
    assert_equal %w[one two], arrays.values('x-multi'), 'Array values (Rack 3) give one line each'
  end

  def check_to_path_and_call_bodies(process)
    file = call_app(process, uri: '/raw/to-path?id=to-path')
    assert_ok file, 'to_path body'
    assert_equal File.binread(File.join(@app, 'to-path.bin')), file.body, 'the file behind to_path is sent, not each'

    streamed = call_app(process, uri: '/raw/call?id=call')
    assert_ok streamed, 'call (streaming) body'
    assert_equal "part 1\npart 2\n", streamed.body
  end

  def check_close_is_always_called(process, stderr)
    assert_ok call_app(process, uri: '/close-probe?id=plain'), 'closing body'
    assert_equal '', call_app(process, method: 'HEAD', uri: '/close-probe?id=head').body

    failed = call_app(process, uri: '/each-raises?id=failed-each')
    assert_equal 'HTTP/1.1 200 OK', failed.status, 'the head was out before each failed'
    assert_equal "one\n", failed.body, 'the response ends where each failed'

    crashed = call_app(process, uri: '/app-raises')
    assert_equal 'HTTP/1.1 500 Internal Server Error', crashed.status

    assert_equal [['plain', 200, nil], ['head', 200, nil]], call_app(process, uri: '/finished').json,
                 'rack.response_finished callbacks run after each response'

    closed = call_app(process, uri: '/closed').json
    %w[plain head failed-each to-path call].each do |id|
      assert_includes closed, id, "close was called on the #{id} body"
    end
    log = stderr.is_a?(String) ? File.read(stderr) : stderr.read_nonblock(1 << 20, exception: false).to_s
    assert_match(/this body fails on purpose/, log, 'the failure is logged on stderr')
    assert_match(/this app fails on purpose/, log)
  end

  def check_full_hijack(process)
    sock = open_session(process, uri: '/hijack')
    got = read_until(sock, "hijacked\n")
    sock.write("ping\n")
    got << read_all(sock)
    response = parse_response(got)
    assert_equal 'HTTP/1.1 200 OK', response.status
    assert_equal ['yes'], response.values('x-hijacked'), 'the app wrote the whole response itself'
    assert_equal "hijacked\necho: ping\n", response.body, 'nothing from the loader after the hijack'
    assert_ok call_app(process, uri: '/text'), 'the loader serves on after a hijack'

    partial = call_app(process, uri: '/partial-hijack')
    assert_ok partial, 'partial hijack'
    assert_equal ['text/plain'], partial.values('content-type')
    assert_empty partial.values('rack.hijack'), 'rack.* headers are not sent'
    assert_equal "partial\n", partial.body
  ensure
    sock&.close
  end

  def check_out_of_band_work(process)
    asked = call_app(process, uri: '/oob')
    assert_ok asked, 'OOB request'
    assert_includes asked.head.split("\r\n"), '!~Request-OOB-Work: true',
                    'the head tells the core, in exactly that form'
    assert_equal "oob requested\n", asked.body

    header = { 'REQUEST_METHOD' => 'OOBW', 'REQUEST_URI' => '/', 'PATH_INFO' => '/', 'QUERY_STRING' => '',
               'CONTENT_LENGTH' => '0', 'PASSENGER_CONNECT_PASSWORD' => process.password }
    data = header.map { |k, v| "#{k}\0#{v}\0" }.join
    answer = UNIXSocket.open(process.socket) do |sock|
      sock.write([data.bytesize].pack('N') + data)
      read_all(sock)
    end
    assert_equal "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", answer,
                 'answered, then closed: the core closes idle connections before out-of-band work'

    runs = call_app(process, uri: '/oob-runs').json
    assert_equal({ 'oob_runs' => 1, 'oobw_reached_app' => false }, runs,
                 'OOBW runs the :oob_work callbacks, not the app')
  end

  def test_request_matrix_through_rack_lint_direct
    loader = start_conformance_loader
    run_request_matrix(loader, loader.stderr)
    assert_equal false, call_app(loader, uri: '/env').json['rack.multithread'], 'one thread: not multithreaded'
  end

  def test_request_matrix_through_rack_lint_in_a_smart_spawned_child
    use_conformance_app
    preloader = start_preloader
    child = spawn_child(preloader)
    run_request_matrix(child, child.stderr)
    assert_equal child.pid, call_app(child, uri: '/env').json['pid'], 'the child serves, not the preloader'
  end

  # With a Rack 3 gem installed, the same matrix runs against Rack 3's Lint.
  def test_request_matrix_through_rack_3_lint
    require 'rubygems'
    unless Gem::Specification.find_all_by_name('rack', '>= 3').any?
      reason = "no Rack 3 gem is installed for #{RUBY_DESCRIPTION} (only Debian's Rack #{rack_release}); " \
               'install one (gem install rack) to run the matrix against Rack 3'
      warn "skipped: #{reason}"
      skip reason
    end
    activate = File.join(@tmp, 'rack3.rb')
    File.write(activate, "gem 'rack', '>= 3'\n")
    loader = start_conformance_loader({}, 'RUBYOPT' => "-r#{activate}")
    assert_operator call_app(loader, uri: '/env').json['rack'].to_i, :>=, 3
    run_request_matrix(loader, loader.stderr)
  end

  def rack_release
    IO.popen([RbConfig.ruby, '-e', 'require "rack"; print Rack.release'], err: File::NULL, &:read)
  end

  def test_base_uri_splits_script_name_and_path_info_on_segment_boundaries
    loader = start_conformance_loader({ 'base_uri' => '/sub' })
    {
      '/sub/env/x%20y' => ['/sub', '/env/x%20y'],
      '/sub' => ['/sub', ''],
      '/sub/' => ['/sub', '/'],
      '/s%75b/env' => ['/s%75b', '/env'],
      '/subway/env' => ['', '/subway/env']
    }.each do |uri, (script_name, path_info)|
      env = call_app(loader, uri: uri).json
      assert_equal [script_name, path_info], [env['SCRIPT_NAME'], env['PATH_INFO']], "for #{uri}"
    end
    # nginx rewrote or normalised the URI: the path it routed is the one that counts.
    env = call_app(loader, uri: '/sub/a/../env', env: { 'PATH_INFO' => '/sub/env' }).json
    assert_equal ['/sub', '/env'], [env['SCRIPT_NAME'], env['PATH_INFO']]
    # The same app under another base URI: nginx's split of this request wins.
    env = call_app(loader, uri: '/other/env', env: { 'SCRIPT_NAME' => '/other', 'PATH_INFO' => '/env' }).json
    assert_equal ['/other', '/env'], [env['SCRIPT_NAME'], env['PATH_INFO']]
  end

  # 4 requests that each wait until all 4 are inside the app: they overlap in time only if
  # 4 threads serve them at once.
  def assert_serves_four_at_once(process)
    id = SecureRandom.hex(4)
    clients = Array.new(4) { Thread.new { call_app(process, uri: "/slow?id=#{id}&n=4") } }
    results = clients.map do |client|
      flunk "A slow request did not finish within #{WAIT}s" unless client.join(WAIT)
      assert_ok client.value, 'slow request'
      client.value.json
    end
    assert_equal [process.pid], results.map { |r| r['pid'] }.uniq, 'one process serves them all'
    assert_equal [true], results.map { |r| r['multithread'] }.uniq, 'rack.multithread is true'
    latest_start = results.map { |r| r['start'] }.max
    earliest_end = results.map { |r| r['end'] }.min
    assert_operator latest_start, :<, earliest_end,
                    "all 4 requests were in the app at the same time: #{results.inspect}"
  end

  def test_thread_count_serves_concurrent_requests_direct
    loader = start_conformance_loader({ 'thread_count' => '4' }, {}, concurrency: 4)
    assert_serves_four_at_once(loader)
  end

  def test_thread_count_serves_concurrent_requests_in_a_smart_spawned_child
    use_conformance_app
    preloader = start_preloader('thread_count' => '4')
    child = spawn_child(preloader, { 'thread_count' => '4' }, concurrency: 4)
    assert_serves_four_at_once(child)
  end

  # Stopping (stdin closed) refuses new connections at once, and lets the request in progress
  # finish before the process exits.
  def test_a_request_in_progress_finishes_when_stdin_closes
    loader = start_conformance_loader({ 'thread_count' => '2' }, {}, concurrency: 2)
    gate, sock, received = hold_stream(loader)
    loader.stdin.close
    wait_socket_closed(loader)
    open_gate(gate)
    response = parse_response(received + read_all(sock))
    assert_equal "first\nsecond\n", response.body, 'the request in progress was served to its end'
    assert_equal 0, wait_exit(loader, 'the loader').exitstatus
    refute File.exist?(loader.socket), 'the loader removes its socket'
  ensure
    sock&.close
    gate&.close
  end

  # A process with one thread takes two more connections while it serves the first, and answers
  # the requests sent on them in turn as soon as the first is done (the core's requests sent
  # ahead). Processes with more threads, or none of their own, say nothing of the kind.
  def test_one_thread_serves_requests_sent_ahead_on_two_more_connections
    loader = start_conformance_loader
    assert_equal 2, loader.prefetch, 'a one-thread process takes two requests ahead'
    gate, busy, received = hold_stream(loader)
    ahead = open_session(loader, uri: '/text')
    ahead2 = open_session(loader, uri: '/text')
    refute IO.select([ahead, ahead2], nil, nil, 0.2), 'the requests sent ahead wait for the one before them'
    open_gate(gate)
    assert_equal "first\nsecond\n", parse_response(received + read_all(busy)).body
    [ahead, ahead2].each_with_index do |conn, i|
      response = read_response(conn)
      assert_ok response, "request #{i + 1} sent ahead"
      assert response.kept, "request #{i + 1} sent ahead: its connection is kept for the next request"
    end
    assert exchange(ahead, loader, uri: '/text').kept, 'and carries it'
    # A fourth connection while three are open waits until one closes.
    other = UNIXSocket.new(loader.socket)
    assert exchange(other, loader, uri: '/text').kept
    fourth = open_session(loader, uri: '/text')
    refute IO.select([fourth], nil, nil, 0.2), 'a fourth connection is not served while three are open'
    ahead.close
    assert_ok read_response(fourth), 'the fourth connection, once one of the three closed'
  ensure
    [busy, ahead, ahead2, other, fourth, gate].each { |io| io&.close unless io&.closed? }
  end

  # Stopping while a request waits on the second (kept) connection: it is still answered
  # (saying `Connection: close`), after the one in progress, and the process exits. (A
  # connection still waiting to be accepted is refused when the socket closes: the core sends
  # its request again elsewhere.)
  def test_a_request_sent_ahead_is_answered_when_stdin_closes
    loader = start_conformance_loader
    ahead = UNIXSocket.new(loader.socket)
    assert exchange(ahead, loader, uri: '/text').kept
    gate, busy, received = hold_stream(loader)
    send_request(ahead, loader, uri: '/text')
    loader.stdin.close
    wait_socket_closed(loader)
    open_gate(gate)
    assert_equal "first\nsecond\n", parse_response(received + read_all(busy)).body
    response = read_response(ahead)
    assert_ok response, 'the request sent ahead, when the loader stops'
    assert response.close?, "it ends its connection: #{response.head}"
    assert_equal 0, wait_exit(loader, 'the loader').exitstatus
  ensure
    [busy, ahead, gate].each { |io| io&.close unless io&.closed? }
  end

  def test_the_app_can_set_the_advertised_concurrency
    File.write(File.join(@app, 'config.ru'), <<~'RUBY')
      PhusionPassenger.advertised_concurrency_level = 0
      run lambda { |env| [200, { 'content-type' => 'text/plain' }, ['ok']] }
    RUBY
    loader = start('rack-loader.rb')
    handshake(loader, options(SecureRandom.hex(16), 'thread_count' => '2'), concurrency: 0)
    assert_equal 0, loader.prefetch, 'no request ahead for a process with unlimited concurrency'
    response = call_app(loader, uri: '/')
    assert_equal 'ok', response.body
    # Unlimited connections could each hold a thread while idle: none is kept.
    assert response.close?, "no keep-alive with an advertised concurrency of 0: #{response.head}"
    assert response.eof
  end

  # --- keep-alive: several requests per connection ---------------------------------------------

  # Requests of every delimited shape, one after the other on one connection: each answer
  # complete, correct, and the connection kept after it.
  def check_requests_on_one_connection(process)
    UNIXSocket.open(process.socket) do |sock|
      text = exchange(sock, process, uri: '/text')
      assert_ok text, 'first request'
      assert_equal "some text\n", text.body
      assert text.kept, "a response with its Content-Length keeps the connection: #{text.head}"
      refute text.close?

      env = exchange(sock, process, uri: '/env/second?n=2')
      assert_ok env, 'second request on the same connection'
      assert_equal ['/env/second', 'n=2'], env.json.values_at('PATH_INFO', 'QUERY_STRING')
      assert env.kept
    end

    UNIXSocket.open(process.socket) do |sock|
      head = exchange(sock, process, method: 'HEAD', uri: '/text')
      assert_ok head, 'HEAD'
      assert_equal ['10'], head.values('content-length')
      assert head.kept, 'a HEAD response is delimited (no body)'

      no_content = exchange(sock, process, uri: '/status/204')
      assert_equal 'HTTP/1.1 204 No Content', no_content.status
      assert no_content.kept

      form = 'name=J%C3%BCrgen+M&list=a'.b
      post = exchange(sock, process, method: 'POST', uri: '/form', body: form,
                                     env: { 'CONTENT_TYPE' => 'application/x-www-form-urlencoded' })
      assert_ok post, 'POST after a 204'
      assert_equal({ 'name' => 'Jürgen M', 'list' => 'a' }, post.json)
      assert post.kept

      # Bodies over 1 MiB go through a temp file, responses over 64 KiB are streamed (counted).
      # After the small POST above, whose first read took its whole body: a first read that
      # takes 16 KiB of body must still work.
      upload = Random.new(7).bytes(2 * MIB)
      up = exchange(sock, process, method: 'POST', uri: '/upload', body: upload,
                                   env: { 'CONTENT_TYPE' => 'application/octet-stream' })
      assert_equal upload.bytesize, up.json['size']
      assert_equal Digest::SHA256.hexdigest(upload), up.json['sha256']
      big = exchange(sock, process, uri: '/big?mb=3')
      assert_equal 3 * MIB, big.body.bytesize
      assert big.kept, 'an each body with its Content-Length, all of it written'
      not_modified = exchange(sock, process, uri: '/status/304')
      assert_equal 'HTTP/1.1 304 Not Modified', not_modified.status
      file = exchange(sock, process, uri: '/raw/to-path?id=kept-file')
      assert_equal [File.size(File.join(@app, 'to-path.bin')).to_s], file.values('content-length'),
                   'a to_path body gets its file size as Content-Length'
      assert_equal File.binread(File.join(@app, 'to-path.bin')), file.body
      assert file.kept

      # Undelimited: said, and the connection ends.
      last = exchange(sock, process, uri: '/close-probe?id=last')
      assert_equal "closing body\n", last.body
      assert last.close?, "an each body without Content-Length: #{last.head}"
      assert last.eof
    end
  end

  # Responses that cannot be kept say `Connection: close` when that is known before the head,
  # and the connection ends after them in any case.
  def check_responses_that_end_the_connection(process)
    { '/raw/call?id=ka-call' => "part 1\npart 2\n", '/partial-hijack' => "partial\n",
      '/raw/short-length?kind=array' => '0123456789', '/raw/short-length?kind=file' => '0123456789',
      '/app-raises' => "Internal Server Error\n" }.each do |uri, body|
      UNIXSocket.open(process.socket) do |sock|
        response = exchange(sock, process, uri: uri)
        assert response.close?, "#{uri}: Connection: close in #{response.head.inspect}"
        assert response.eof, "#{uri}: the loader closes the connection"
        assert_equal body, response.body, uri
      end
    end
    # An each body shorter than its Content-Length: only known once written; the core sees it
    # short, then EOF.
    UNIXSocket.open(process.socket) do |sock|
      short = exchange(sock, process, uri: '/raw/short-length?kind=each')
      assert_equal ['15'], short.values('content-length')
      assert_equal '0123456789', short.body
      assert short.eof, 'a body shorter than its Content-Length ends the connection'
    end
    # The loader carries on.
    assert call_app(process, uri: '/text').kept
  end

  # A body longer than its Content-Length is cut there, and the connection serves on.
  def check_bodies_longer_than_their_length(process, stderr)
    UNIXSocket.open(process.socket) do |sock|
      %w[array each file].each do |kind|
        long = exchange(sock, process, uri: "/raw/long-length?kind=#{kind}")
        assert_ok long, kind
        assert_equal '0123456', long.body, "#{kind}: cut at the Content-Length"
        assert long.kept, "#{kind}: the connection is kept"
        after = exchange(sock, process, uri: '/text')
        assert_equal "some text\n", after.body, "#{kind}: the next response starts where it should"
      end
    end
    log = stderr.is_a?(String) ? File.read(stderr) : stderr.read_nonblock(1 << 20, exception: false).to_s
    assert_match(/longer than its Content-Length \(7\)/, log, 'the cut is logged')
  end

  # The loader closes `sock` (within WAIT), sending nothing more.
  def assert_closed_soon(sock, what)
    ready = IO.select([sock], nil, nil, WAIT)
    flunk "#{what}: still open after #{WAIT} s (a thread waiting for the next request was not woken)" unless ready
    assert_nil sock.read_nonblock(1, exception: false), "#{what}: EOF, nothing more"
  end

  def run_keep_alive_checks(process, stderr)
    check_requests_on_one_connection(process)
    check_responses_that_end_the_connection(process)
    check_bodies_longer_than_their_length(process, stderr)
  end

  def test_keep_alive_direct
    loader = start_conformance_loader
    run_keep_alive_checks(loader, loader.stderr)
  end

  def test_keep_alive_in_a_smart_spawned_child
    use_conformance_app
    preloader = start_preloader
    child = spawn_child(preloader)
    run_keep_alive_checks(child, child.stderr)
  end

  # Stopping while a kept connection sits idle (its thread blocked on the next header): that
  # connection is closed, the request in progress on the other thread finishes, and the
  # process exits without waiting for the core to close the idle one.
  def test_stopping_wakes_idle_kept_connections
    loader = start_conformance_loader({ 'thread_count' => '2' }, {}, concurrency: 2)
    idle = UNIXSocket.new(loader.socket)
    assert exchange(idle, loader, uri: '/text').kept
    gate, busy, received = hold_stream(loader)

    loader.stdin.close
    assert_closed_soon(idle, 'the idle kept connection, when the loader stops')
    open_gate(gate)
    response = parse_response(received + read_all(busy))
    assert_equal "first\nsecond\n", response.body, 'the request in progress was served to its end'
    assert response.close?
    assert_equal 0, wait_exit(loader, 'the loader with an idle kept connection', WAIT).exitstatus
  ensure
    idle&.close
    busy&.close
    gate&.close
  end

  def test_stopping_a_smart_spawned_child_with_an_idle_kept_connection
    use_conformance_app
    preloader = start_preloader
    child = spawn_child(preloader)
    idle = UNIXSocket.new(child.socket)
    assert exchange(idle, child, uri: '/text').kept
    child.stdin.close
    assert_closed_soon(idle, 'the idle kept connection, when the child stops')
    assert_empty child.stdout.read_to_eof(5), 'the child exits (its stdout ends)'
    wait_until("child #{child.pid} did not exit") { process_gone?(child.pid) }
    @started.delete(child.pid)
  ensure
    idle&.close
  end

  # A kept connection is checked on every request: a wrong password later on ends it.
  def test_every_request_on_a_kept_connection_is_checked
    loader = start_conformance_loader
    UNIXSocket.open(loader.socket) do |sock|
      assert exchange(sock, loader, uri: '/text').kept
      intruder = Peer.new(socket: loader.socket, password: 'wrong')
      refused = exchange(sock, intruder, uri: '/text')
      assert_equal '', refused.status, 'no answer to a wrong password'
      assert refused.eof
    end
    assert_match(/wrong connect password/, File.read(loader.stderr))
    assert call_app(loader, uri: '/text').kept, 'the loader serves on'
  end

  # The app keeps the env strings and rack.input of each request, and shows those of the one
  # before: the requests of a kept connection are read into one buffer, which must leave them
  # as they were.
  REMEMBERING_RU = <<~'RUBY'
    require 'json'
    $previous = nil
    run lambda { |env|
      input = env['rack.input']
      earlier = $previous&.to_h { |k, v| [k, v.respond_to?(:read) ? (v.rewind; v.read) : v] }
      $previous = { 'PATH_INFO' => env['PATH_INFO'], 'QUERY_STRING' => env['QUERY_STRING'],
                    'HTTP_X_LAST' => env['HTTP_X_LAST'], 'input' => input }
      input.rewind
      body = JSON.generate('body' => input.read, 'earlier' => earlier,
                           'x' => env.select { |k, _| k.start_with?('HTTP_X_') })
      [200, { 'content-type' => 'application/json', 'content-length' => body.bytesize.to_s }, [body]]
    }
  RUBY

  # Session headers at their edges: an empty last value, a header of one NUL or of no bytes
  # (malformed or without the password: no answer); and the requests of a kept connection,
  # read into one buffer, each see only their own bytes.
  def test_session_header_edges_and_a_kept_connections_requests_apart
    File.write(File.join(@app, 'config.ru'), REMEMBERING_RU)
    loader = start('rack-loader.rb')
    handshake(loader, options(SecureRandom.hex(16)))
    UNIXSocket.open(loader.socket) do |sock|
      # Header and body in one write: the body's start comes in the first read.
      first = exchange(sock, loader, method: 'POST', uri: '/first?q=1', body: 'first body'.b,
                                     env: { 'HTTP_X_LAST' => 'one' })
      assert_ok first, 'POST'
      assert_equal({ 'body' => 'first body', 'earlier' => nil, 'x' => { 'HTTP_X_LAST' => 'one' } }, first.json)
      assert first.kept

      # The password first and an empty value last (its NUL the header's last byte).
      pairs = session_header(loader, 'GET', '/second', '', {}).to_a
      pairs.unshift(pairs.pop)
      pairs << ['HTTP_X_EMPTY', '']
      header = pairs.map { |k, v| "#{k}\0#{v}\0".b }.join
      sock.write([header.bytesize].pack('N') << header)
      second = read_response(sock)
      assert_ok second, 'GET with an empty last value'
      assert_equal({ 'HTTP_X_EMPTY' => '' }, second.json['x'], 'the empty last value is in the env')
      assert_equal({ 'PATH_INFO' => '/first', 'QUERY_STRING' => 'q=1', 'HTTP_X_LAST' => 'one', 'input' => 'first body' },
                   second.json['earlier'], "the first request's env strings and body, as they were")
      assert second.kept

      third = exchange(sock, loader, uri: '/3')
      assert_equal({ 'PATH_INFO' => '/second', 'QUERY_STRING' => '', 'HTTP_X_LAST' => nil, 'input' => '' },
                   third.json['earlier'])
    end
    ["\0\0\0\x01\0".b, "\0\0\0\0".b].each do |bytes|
      UNIXSocket.open(loader.socket) do |sock|
        sock.write(bytes)
        refused = read_response(sock)
        assert_equal '', refused.status, "no answer to #{bytes.inspect}"
        assert refused.eof
      end
    end
    assert_ok call_app(loader, uri: '/after'), 'the loader serves on'
  end

  # --- Bundler ---------------------------------------------------------------------------------

  def test_a_gemfile_naming_a_missing_gem_gives_the_error_block
    File.write(File.join(@app, 'Gemfile'), "gem 'passenger-rs-test-no-such-gem'\n")
    loader = start('rack-loader.rb')
    assert_equal '!> I have control 1.0', loader.stdout.protocol_line
    loader.stdin.write("You have control 1.0\n#{options('pw').map { |k, v| "#{k}: #{v}\n" }.join}\n")
    assert_equal '!> Error', loader.stdout.protocol_line
    assert_equal '!> html: false', loader.stdout.protocol_line
    message = loader.stdout.read_to_eof.join("\n")
    assert_match(/Could not find gem|cannot load such file/, message)
    assert_match(/passenger-rs-test-no-such-gem/, message) if message.include?('Could not find gem')
    assert_equal 1, wait_exit(loader, 'the loader').exitstatus
  end

  def test_a_gemfile_naming_only_rack_loads_through_bundler
    unless system(RbConfig.ruby, '-e', 'require "bundler"', out: File::NULL, err: File::NULL)
      reason = "Bundler is not installed for #{RUBY_DESCRIPTION} (Debian: ruby-bundler)"
      warn "skipped: #{reason}"
      skip reason
    end
    File.write(File.join(@app, 'Gemfile'), "gem 'rack'\n")
    File.write(File.join(@app, 'config.ru'), <<~'RUBY')
      run lambda { |env|
        body = "bundler=#{defined?(Bundler) ? Bundler::VERSION : 'none'} gemfile=#{ENV['BUNDLE_GEMFILE']} " \
               "setup=#{$LOADED_FEATURES.any? { |f| f.end_with?('bundler/setup.rb') }}\n"
        [200, { 'content-type' => 'text/plain' }, [body]]
      }
    RUBY
    loader = start('rack-loader.rb')
    handshake(loader, options(SecureRandom.hex(16)))
    response = call_app(loader, uri: '/')
    assert_ok response, 'app with a Gemfile'
    assert_match(/\Abundler=\d\S* gemfile=#{Regexp.escape(File.join(@app, 'Gemfile'))} setup=true\n\z/, response.body)
    assert_empty loader.stdout.app_output.grep(/Resolving/), "Bundler's chatter goes to stderr, not the handshake"
  end
end
