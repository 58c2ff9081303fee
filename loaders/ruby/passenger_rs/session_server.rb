# frozen_string_literal: true

module PassengerRs
  # The app process's unix socket: one connection at a time, each carrying one session-protocol
  # request (RequestHandler), until the core says stop through stdin.
  module SessionServer
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

    # Serves until a byte or EOF arrives on stdin.
    def serve(app, server, password)
      loop do
        readable, = IO.select([STDIN, server])
        # A byte or EOF on stdin: the core is gone or wants us to stop.
        return if readable.include?(STDIN)

        begin
          conn = server.accept_nonblock
        rescue IO::WaitReadable, Errno::EINTR, Errno::ECONNABORTED
          next
        end
        begin
          conn.binmode
          RequestHandler.handle(app, conn, password)
        rescue Errno::EPIPE, Errno::ECONNRESET, IOError
          nil
        ensure
          conn.close unless conn.closed?
        end
      end
    end
  end
end
