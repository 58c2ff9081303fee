# frozen_string_literal: true

module PassengerRs
  # The app process's unix socket, served by N threads (handshake key `thread_count`, 1 when
  # absent) that each accept a connection, serve its session-protocol requests one after the
  # other (RequestHandler) until it is closed, and go back to accepting, until the core says
  # stop through stdin. A thread may block on its kept connection: the core never opens more
  # connections than the advertised concurrency. With one thread, the thread serves up to two
  # connections in turn (serve_in_turn): the second carries a request the core sends ahead.
  module SessionServer
    # Kept connections whose thread waits for the next request. Stopping shuts their reading
    # side down, which wakes those threads (EOF) so that they close them and leave.
    class IdleConnections
      def initialize
        @lock = Mutex.new
        @idle = {}.compare_by_identity
        @stopping = false
      end

      # false once stopping: the caller must not wait on `conn` then.
      def enter(conn)
        @lock.synchronize do
          return false if @stopping

          @idle[conn] = true
        end
        true
      end

      def leave(conn)
        @lock.synchronize { @idle.delete(conn) }
      end

      def stop
        @lock.synchronize do
          @stopping = true
          # Only the reading side: a request that just arrived can still be answered.
          @idle.each_key do |conn|
            conn.shutdown(Socket::SHUT_RD)
          rescue IOError, SystemCallError
            nil
          end
        end
      end
    end

    module_function

    # Creates `<socket_dir>/ruby.<16 hex>`, readable and writable by the owner only.
    def create(options)
      dir = options['socket_dir'] || Dir.tmpdir
      path = File.join(dir, "ruby.#{SecureRandom.hex(8)}")
      old_umask = File.umask(0o077)
      begin
        server = UNIXServer.new(path)
      ensure
        File.umask(old_umask)
      end
      File.chmod(0o600, path)
      [server, path]
    rescue SystemCallError => e
      Handshake.fail_startup("Cannot create the app's socket in #{dir}", e)
    end

    # Serves with `threads` threads until a byte or EOF arrives on stdin; then closes the socket
    # and the idle kept connections, and waits for the requests in progress (the core sends
    # SIGTERM if they take too long). `on_ready` is called once the threads accept.
    # `prefetch` (one thread only): connections the thread takes beyond its first, served in
    # turn (see serve_in_turn).
    #
    # The threads wait in a blocking accept(2) (the socket in blocking mode, the GVL released):
    # one system call per connection, and the kernel wakes one waiting thread per connection,
    # not all of them. Closing the socket wakes them all with an IOError.
    def serve(handler, server, threads, prefetch: 0, on_ready: nil)
      server.nonblock = false
      idle = IdleConnections.new
      # Closed when stopping: wakes serve_in_turn's select (closing the socket does not).
      stop_r, stop_w = IO.pipe if prefetch.positive?
      workers = Array.new(threads) do |i|
        Thread.new do
          Thread.current.name = "passenger-rs request #{i + 1}" if Thread.current.respond_to?(:name=)
          if prefetch.positive?
            serve_in_turn(handler, server, idle, 1 + prefetch, stop_r)
          else
            accept_loop(handler, server, idle)
          end
        end
      end
      on_ready&.call
      wait_for_stop
      graceful = true
    ensure
      # New connections are refused from now on (the core can send them to another process);
      # threads waiting in accept get an IOError and leave, the others leave after their
      # request (whose head says `Connection: close` if not out yet); those waiting on a kept
      # connection are woken up.
      server.close unless server.closed?
      handler.stop!
      idle&.stop
      stop_w&.close
      # On SIGTERM, or `exit` in the app, nobody waits for the requests in progress.
      workers&.each(&:join) if graceful
    end

    # A byte or EOF on stdin: the core is gone or wants us to stop.
    def wait_for_stop
      loop do
        readable, = IO.select([STDIN])
        return if readable
      end
    end

    def accept_loop(handler, server, idle)
      loop do
        begin
          conn = server.accept
        rescue Errno::EINTR, Errno::ECONNABORTED, Errno::EAGAIN
          next
        end
        serve_connection(handler, conn, idle)
      end
    rescue Exception => e # rubocop:disable Lint/RescueException -- see below
      # `exit` in the app (SystemExit) or a fatal error must end the process, as it would in a
      # single-threaded server: the main thread then stops the worker cleanly.
      Thread.main.raise(e) unless e.is_a?(IOError) && server.closed?
    end

    def serve_connection(handler, conn, idle)
      result = nil
      conn.binmode
      # The connection's requests are read into it, one after the other.
      buffer = String.new(capacity: RequestHandler::FIRST_READ)
      result = serve_one(handler, conn, buffer)
      if result == :keep
        # Blocking mode, as for accept: waiting for the next request is then one read(2),
        # not read, EAGAIN, poll and read again. (shutdown wakes a blocking read too.)
        conn.nonblock = false
        result = serve_one(handler, conn, buffer, idle) while result == :keep
      end
    ensure
      conn.close unless result == :hijacked || conn.closed?
    end

    # One thread serving up to `limit` connections, one request at a time, taking turns among
    # those that have one. The core opens more connections to a busy process to send it
    # requests ahead (the `prefetch: 2` of the handshake): the process starts each as soon as
    # it has answered the one before, where a process with one connection would sleep
    # until the core had read its answer and sent the next request (that sleep and wake-up
    # cost about as much CPU as a hello-world request itself). Every connection is registered
    # as idle for its whole life: stopping shuts its reading side, which ends the wait here,
    # and the requests already sent are still answered (`Connection: close`). `stopped` turns
    # readable (EOF) once the loader stops: from then on no connection is accepted, and the
    # thread leaves once the ones it has are closed.
    def serve_in_turn(handler, server, idle, limit, stopped)
      # connection => [the buffer its requests are read into, whether it carried one before]
      conns = {}.compare_by_identity
      stopping = false
      loop do
        stopping ||= server.closed?
        return if stopping && conns.empty?

        watched = conns.keys
        unless stopping
          watched.unshift(server) if conns.size < limit
          watched.unshift(stopped)
        end
        begin
          readable, = IO.select(watched)
        rescue IOError # the socket was closed just now: stopping
          stopping = true
          next
        end
        readable.each do |io|
          if io.equal?(stopped)
            stopping = true
          elsif io.equal?(server)
            conn = !stopping && accept_one(server, idle)
            conns[conn] = [String.new(capacity: RequestHandler::FIRST_READ), false] if conn
          else
            state = conns[io]
            result = serve_one(handler, io, state[0], nil, kept: state[1])
            state[1] = true
            next if result == :keep

            conns.delete(io)
            idle.leave(io)
            io.close unless result == :hijacked || io.closed?
          end
        end
      end
    rescue Exception => e # rubocop:disable Lint/RescueException -- as in accept_loop
      Thread.main.raise(e) unless e.is_a?(IOError) && server.closed?
    ensure
      conns&.each_key do |conn|
        idle.leave(conn)
        conn.close unless conn.closed?
      end
    end

    # A new connection, registered as idle; nil when none was waiting after all, or when
    # stopping (it is closed then).
    def accept_one(server, idle)
      conn = server.accept_nonblock(exception: false)
      return nil if conn == :wait_readable

      conn.binmode
      return conn if idle.enter(conn)

      conn.close
      nil
    rescue Errno::EINTR, Errno::ECONNABORTED, IOError # IOError: closed meanwhile (stopping)
      nil
    end

    # Serves the connection's next request (RequestHandler#handle); :done when it failed.
    def serve_one(handler, conn, buffer, idle = nil, kept: !idle.nil?)
      handler.handle(conn, idle, buffer, kept: kept)
    rescue *RequestHandler::GONE, Errno::EINVAL
      :done
    rescue StandardError => e
      RequestHandler.log_exception('Error while serving a request', e)
      :done
    end
  end
end
