# frozen_string_literal: true

module PassengerRs
  # The preloader's spawn-command server (see rack-preloader.rb for the protocol). It runs in the
  # preloader, which has the app loaded, and forks one child per `spawn` command. `run` returns
  # twice over, so to speak: in the preloader when it should exit (:stop), and in each child
  # right after the fork (:forked), which then goes on as a freshly started loader would.
  class SpawnServer
    # A client must deliver its command this quickly, or it is dropped: the preloader serves
    # one connection at a time and must not hang on one.
    COMMAND_TIMEOUT = 10
    DEFAULT_IDLE_TIME = 300

    def initialize(options)
      @password = options['connect_password'].to_s
      @socket_dir = options['socket_dir'] || Dir.tmpdir
      @idle_time = parse_idle_time(options['max_preloader_idle_time'])
      @owner = Process.pid
      @children = []
    end

    # Serves spawn commands until stdin says stop or the idle time runs out (:stop), or until
    # this process is a freshly forked child (:forked).
    def run
      listen
      install_reaper
      Handshake.report_ready("spawn;unix:#{@path};preloader;0")
      serve
    ensure
      # A child has already closed what it inherited, and the socket is the preloader's.
      cleanup if Process.pid == @owner
    end

    private

    def parse_idle_time(text)
      return DEFAULT_IDLE_TIME if text.nil? || text.strip.empty?

      [Float(text), 0].max
    rescue ArgumentError
      DEFAULT_IDLE_TIME
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def listen
      @path = File.join(@socket_dir, "preloader.#{SecureRandom.hex(8)}")
      old_umask = File.umask(0o077)
      begin
        @server = UNIXServer.new(@path)
      ensure
        File.umask(old_umask)
      end
      File.chmod(0o600, @path)
    rescue SystemCallError => e
      Handshake.fail_startup("Cannot create the preloader's socket in #{@socket_dir}", e)
    end

    # SIGCHLD only wakes the main loop through a pipe; the waiting happens there, outside the
    # signal handler.
    def install_reaper
      @wakeup_r, @wakeup_w = IO.pipe
      wakeup = @wakeup_w
      trap('CHLD') do
        wakeup.write_nonblock('.', exception: false)
      rescue IOError, SystemCallError
        nil
      end
    end

    # Collects the exit status of children that have exited. Only our own children: waiting
    # for any pid would steal statuses from processes the app started itself.
    def reap
      @children.reject! do |pid|
        Process.wait(pid, Process::WNOHANG)
      rescue Errno::ECHILD
        true
      end
    end

    def serve
      last_command = now
      loop do
        reap
        timeout = @idle_time.positive? ? [@idle_time - (now - last_command), 0].max : nil
        readable, = IO.select([STDIN, @server, @wakeup_r], nil, nil, timeout)
        if readable.nil?
          STDERR.write("The preloader of #{Dir.pwd} got no spawn command for #{@idle_time} seconds; it exits\n")
          return :stop
        end
        # A byte or EOF on stdin: the core is gone or wants us to stop.
        return :stop if readable.include?(STDIN)

        @wakeup_r.read_nonblock(256, exception: false) if readable.include?(@wakeup_r)
        next unless readable.include?(@server)

        begin
          conn = @server.accept_nonblock
        rescue IO::WaitReadable, Errno::EINTR, Errno::ECONNABORTED
          next
        end
        case handle(conn)
        when :forked then return :forked
        when :spawned then last_command = now
        end
      end
    end

    # One connection, one command. Returns :spawned, :refused, or :forked (in the child).
    def handle(conn)
      items = MessageChannel.read_array(conn, COMMAND_TIMEOUT)
      return :refused unless items

      command, password = items
      unless PassengerRs.secure_compare(password.to_s, @password)
        MessageChannel.write_array(conn, ['error', 'wrong password'])
        return :refused
      end
      unless command == 'spawn' && items.size == 2
        MessageChannel.write_array(conn, ['error', "unknown command #{command.inspect}; the preloader only takes [\"spawn\", password]"])
        return :refused
      end
      spawn(conn)
    rescue Errno::EPIPE, Errno::ECONNRESET, IOError
      :refused
    ensure
      conn.close unless conn.closed?
    end

    # Forks a child with three new pipes as its stdin, stdout and stderr, and passes the core's
    # ends of them back over the connection, with the child's pid, in one sendmsg.
    def spawn(conn)
      in_r, in_w = IO.pipe
      out_r, out_w = IO.pipe
      err_r, err_w = IO.pipe
      pipes = [in_r, in_w, out_r, out_w, err_r, err_w]
      begin
        pid = Process.fork
      rescue SystemCallError, NotImplementedError => e
        MessageChannel.write_array(conn, ['error', "The preloader cannot fork a new app process: #{e.message}"[0, 4096]])
        return :refused
      end
      if pid.nil?
        become_child(conn, in_r, out_w, err_w, pipes)
        return :forked
      end
      @children << pid
      conn.sendmsg(MessageChannel.encode_array(['ok', pid.to_s]), 0, nil,
                   Socket::AncillaryData.unix_rights(in_w, out_r, err_r))
      :spawned
    ensure
      # In the preloader, none of the pipes may stay open: the next child would inherit them,
      # and a child whose stdin has a second writer never sees EOF.
      pipes&.each { |io| io.close unless io.closed? } if Process.pid == @owner
    end

    # In the new child: its own session and process group (the core signals the group), the
    # pipes as fds 0/1/2, nothing of the preloader's left open, default signal handling.
    def become_child(conn, in_r, out_w, err_w, pipes)
      trap('CHLD', 'DEFAULT')
      Process.setsid
      STDIN.reopen(in_r)
      STDOUT.reopen(out_w)
      STDERR.reopen(err_w)
      pipes.each(&:close)
      [@server, conn, @wakeup_r, @wakeup_w].each { |io| io.close unless io.closed? }
      @children.clear
      Handshake.prepare_stdio
    rescue Exception => e # rubocop:disable Lint/RescueException -- a broken child must not go on
      begin
        STDERR.write("A new app process could not be set up after the fork: #{e.class}: #{e.message}\n")
      rescue StandardError
        nil
      end
      exit!(1)
    end

    def cleanup
      trap('CHLD', 'DEFAULT')
      [@server, @wakeup_r, @wakeup_w].compact.each { |io| io.close unless io.closed? }
      File.unlink(@path) if @path && File.exist?(@path)
      reap
    end
  end
end
