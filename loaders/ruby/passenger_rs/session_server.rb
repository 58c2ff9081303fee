# frozen_string_literal: true

module PassengerRs
  # The app process's unix socket, served by N threads (handshake key `thread_count`, 1 when
  # absent) that each accept a connection, serve its session-protocol requests one after the
  # other (RequestHandler) until it is closed, and go back to accepting, until the core says
  # stop through stdin. A thread may block on its kept connection: the core never opens more
  # connections than the advertised concurrency.
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
    #
    # The threads wait in a blocking accept(2) (the socket in blocking mode, the GVL released):
    # one system call per connection, and the kernel wakes one waiting thread per connection,
    # not all of them. Closing the socket wakes them all with an IOError.
    def serve(handler, server, threads, on_ready: nil)
      server.nonblock = false
      idle = IdleConnections.new
      workers = Array.new(threads) do |i|
        Thread.new do
          Thread.current.name = "passenger-rs request #{i + 1}" if Thread.current.respond_to?(:name=)
          accept_loop(handler, server, idle)
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
      begin
        conn.binmode
        # The connection's requests are read into it, one after the other.
        buffer = String.new(capacity: RequestHandler::FIRST_READ)
        result = handler.handle(conn, nil, buffer)
        if result == :keep
          # Blocking mode, as for accept: waiting for the next request is then one read(2),
          # not read, EAGAIN, poll and read again. (shutdown wakes a blocking read too.)
          conn.nonblock = false
          result = handler.handle(conn, idle, buffer) while result == :keep
        end
      rescue *RequestHandler::GONE, Errno::EINVAL
        nil
      rescue StandardError => e
        RequestHandler.log_exception('Error while serving a request', e)
      ensure
        conn.close unless result == :hijacked || conn.closed?
      end
    end
  end
end
