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
  Peer = Struct.new(:pid, :stdin, :stdout, :stderr, :socket, :password, keyword_init: true)

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
  def handshake(process, opts, kind: 'main', protocol: 'session', concurrency: 1)
    assert_equal '!> I have control 1.0', process.stdout.protocol_line
    process.stdin.write("You have control 1.0\n#{opts.map { |k, v| "#{k}: #{v}\n" }.join}\n")
    assert_equal '!> Ready', process.stdout.protocol_line
    socket_line = process.stdout.protocol_line
    match = /\A!> socket: #{kind};unix:(.+);#{protocol};#{concurrency}\z/.match(socket_line)
    assert match, "Unexpected socket line #{socket_line.inspect}"
    assert_equal '!> ', process.stdout.protocol_line
    process.socket = match[1]
    process.password = opts['connect_password']
    assert_equal 0o600, File.stat(process.socket).mode & 0o777, 'the socket must be private'
    process.socket
  end

  def read_all(io, timeout = WAIT)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    data = +''.b
    loop do
      chunk = io.read_nonblock(65_536, exception: false)
      case chunk
      when nil then return data
      when :wait_readable
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        flunk "The connection was not closed within #{timeout}s; got #{data.inspect}" if left <= 0
        IO.select([io], nil, nil, left)
      else data << chunk
      end
    end
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
      response = read_all(sock)
      head, body = response.split("\r\n\r\n", 2)
      [head.to_s.lines.first.to_s.chomp, body.to_s]
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
  def spawn_child(preloader)
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
    path = handshake(child, options(SecureRandom.hex(16), 'socket_dir' => child_sockets))
    assert_equal child_sockets, File.dirname(path), "the child must use its own socket_dir"
    child
  end

  # Waits for a process this test started to exit; returns its status.
  def wait_exit(process, what)
    waiter = Thread.new { Process.wait2(process.pid)[1] }
    flunk "#{what} (pid #{process.pid}) did not exit within #{WAIT}s\n#{File.read(process.stderr)}" unless waiter.join(WAIT)
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

  def start_preloader(extra = {})
    preloader = start('rack-preloader.rb')
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
end
