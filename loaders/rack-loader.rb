#!/usr/bin/env ruby
# frozen_string_literal: true
#
# passenger-rs Rack loader.
#
# Started by the core agent as `ruby rack-loader.rb` in the app root, with stdin and stdout as
# the handshake channel:
#
#   loader:  !> I have control 1.0
#   core:    You have control 1.0
#   core:    key: value            (app_root, startup_file, environment, connect_password,
#   core:    ...                    socket_dir, base_uri, ...)
#   core:    (empty line)
#   loader:  !> Ready
#   loader:  !> socket: main;unix:<path>;session;1
#   loader:  !>                    (with a trailing space)
#
# If the app cannot be loaded it prints `!> Error` and the exception, and exits 1.
# Once ready it serves the session protocol on its unix socket, one request at a time: a 4-byte
# big-endian length, NUL-separated KEY/VALUE pairs (the CGI environment and the connect
# password), then the body; it answers with an HTTP/1.1 response and closes the connection.
# A byte or EOF on stdin (the core is gone or wants it to stop) makes it exit.
#
# It can be driven by hand: run it, type `You have control 1.0`, then e.g.
# `app_root: /srv/app`, `connect_password: x`, `socket_dir: /tmp`, and an empty line.

require 'socket'
require 'stringio'
require 'tempfile'
require 'securerandom'
require 'tmpdir'

module PassengerRackLoader
  PROTOCOL_VERSION = '1.0'
  # Bodies up to this size are kept in memory; larger ones go to a temp file.
  MAX_MEMORY_BODY = 1024 * 1024
  MAX_HEADER = 1024 * 1024
  COPY_CHUNK = 64 * 1024

  class BodyTooShort < StandardError; end

  module_function

  def protocol(line)
    STDOUT.write("!> #{line}\n")
  end

  # Reports a start-up failure to the core and exits.
  def fail_startup(summary, exception = nil)
    protocol('Error')
    protocol('html: false')
    STDOUT.write("#{summary}\n")
    if exception
      STDOUT.write("#{exception.class}: #{exception.message}\n")
      (exception.backtrace || []).each { |l| STDOUT.write("    #{l}\n") }
    end
    STDOUT.flush
    exit!(1)
  end

  def read_options
    protocol("I have control #{PROTOCOL_VERSION}")
    answer = STDIN.gets
    unless answer && answer.chomp == "You have control #{PROTOCOL_VERSION}"
      fail_startup("Expected 'You have control #{PROTOCOL_VERSION}' from the spawner, got #{answer.inspect}")
    end
    options = {}
    while (line = STDIN.gets)
      line = line.chomp
      break if line.empty?
      key, value = line.split(': ', 2)
      options[key] = value || ''
    end
    fail_startup('The spawner closed stdin before the end of the options') if line.nil?
    options
  end

  def load_app(options)
    app_root = options['app_root'] || Dir.pwd
    Dir.chdir(app_root)
    env = options['environment'] || 'production'
    %w[RACK_ENV RAILS_ENV PASSENGER_APP_ENV].each { |k| ENV[k] ||= env }
    ENV['IN_PASSENGER'] ||= '1'
    $0 = "Passenger RubyApp: #{app_root} (#{env})"
    startup_file = options['startup_file'] || File.join(app_root, 'config.ru')
    unless File.exist?(startup_file)
      fail_startup("The startup file #{startup_file} does not exist; create it or set passenger_startup_file")
    end
    begin
      require 'rack'
    rescue LoadError => e
      fail_startup("Rack is not installed for #{RUBY_DESCRIPTION}; install the rack gem (or Debian's ruby-rack)", e)
    end
    begin
      result = Rack::Builder.parse_file(startup_file)
    rescue Exception => e # rubocop:disable Lint/RescueException -- any failure is reported
      fail_startup("The app in #{app_root} could not be loaded from #{startup_file}", e)
    end
    # Rack 2 returns [app, options], Rack 3 returns the app.
    app = result.is_a?(Array) ? result.first : result
    fail_startup("#{startup_file} does not define a Rack app (no `run`)") unless app.respond_to?(:call)
    app
  end

  def create_server(options)
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
    fail_startup("Cannot create the app's socket in #{dir}", e)
  end

  def secure_compare(a, b)
    return false unless a && b && a.bytesize == b.bytesize

    diff = 0
    a.bytes.zip(b.bytes) { |x, y| diff |= x ^ y }
    diff.zero?
  end

  def read_exact(io, n)
    data = io.read(n)
    data && data.bytesize == n ? data : nil
  end

  # Reads the session header; nil when the connection is closed or the header is malformed.
  def read_session_header(conn)
    len = read_exact(conn, 4)&.unpack1('N')
    return nil unless len && len <= MAX_HEADER

    data = read_exact(conn, len)
    return nil unless data

    parts = data.split("\0", -1)
    parts.pop if parts.last == ''
    return nil if parts.size.odd?

    headers = {}
    parts.each_slice(2) { |k, v| headers[k] = v }
    headers
  end

  # The request body as a rewindable IO: exactly CONTENT_LENGTH bytes.
  def read_body(conn, length)
    if length <= MAX_MEMORY_BODY
      data = length.zero? ? +'' : read_exact(conn, length)
      raise BodyTooShort unless data

      StringIO.new(data.force_encoding(Encoding::BINARY))
    else
      file = Tempfile.new('passenger-body')
      file.binmode
      file.unlink rescue nil
      copied = IO.copy_stream(conn, file, length)
      raise BodyTooShort unless copied == length

      file.rewind
      file
    end
  end

  def rack_env(headers, input)
    env = headers
    env['SCRIPT_NAME'] ||= ''
    env['SCRIPT_NAME'] = '' if env['SCRIPT_NAME'] == '/'
    unless env['PATH_INFO']
      uri = env['REQUEST_URI'] || '/'
      env['PATH_INFO'] = uri.split('?', 2).first
    end
    env['QUERY_STRING'] ||= ''
    env['SERVER_NAME'] ||= 'localhost'
    env['SERVER_PORT'] ||= '80'
    env['SERVER_PROTOCOL'] ||= 'HTTP/1.1'
    env['REQUEST_METHOD'] ||= 'GET'
    env.delete('CONTENT_TYPE') if env['CONTENT_TYPE'] == ''
    env.delete('CONTENT_LENGTH') if env['CONTENT_LENGTH'] == ''
    env.delete('HTTP_CONTENT_TYPE')
    env.delete('HTTP_CONTENT_LENGTH')
    https = env['HTTPS'].to_s.downcase
    env['rack.version'] = defined?(Rack::VERSION) && Rack::VERSION.is_a?(Array) ? Rack::VERSION : [1, 3]
    env['rack.url_scheme'] = %w[on 1 true yes].include?(https) ? 'https' : 'http'
    env['rack.input'] = input
    env['rack.errors'] = STDERR
    env['rack.multithread'] = false
    env['rack.multiprocess'] = true
    env['rack.run_once'] = false
    env['rack.hijack?'] = false
    env['rack.response_finished'] = []
    env
  end

  def reason_phrase(status)
    (defined?(Rack::Utils::HTTP_STATUS_CODES) && Rack::Utils::HTTP_STATUS_CODES[status]) || 'Unknown'
  end

  def head(status, headers)
    out = +"HTTP/1.1 #{status} #{reason_phrase(status)}\r\n"
    headers.each do |name, value|
      values = value.is_a?(Array) ? value : value.to_s.split("\n")
      values.each { |v| out << "#{name}: #{v}\r\n" }
    end
    out << "\r\n"
    out.force_encoding(Encoding::BINARY)
  end

  def log_exception(what, e)
    STDERR.write("#{what}: #{e.class}: #{e.message}\n")
    (e.backtrace || []).each { |l| STDERR.write("    #{l}\n") }
  end

  # Serves one connection: one request, one response, then close.
  def handle(app, conn, password)
    headers = read_session_header(conn)
    return unless headers

    unless secure_compare(headers.delete('PASSENGER_CONNECT_PASSWORD'), password)
      STDERR.write("Refused a session with a wrong connect password; only the core may connect to this socket\n")
      return
    end
    input = read_body(conn, headers['CONTENT_LENGTH'].to_i)
    env = rack_env(headers, input)
    written = false
    body = nil
    error = nil
    status = 500
    response_headers = {}
    begin
      status, response_headers, body = app.call(env)
      status = status.to_i
      conn.write(head(status, response_headers))
      written = true
      if env['REQUEST_METHOD'] == 'HEAD' || status < 200 || status == 204 || status == 304
        nil # no body for these, whatever the app returned
      elsif body.respond_to?(:each)
        body.each { |chunk| conn.write(chunk) unless chunk.empty? }
      elsif body.respond_to?(:call)
        body.call(conn) # Rack 3 streaming body
      end
    rescue Errno::EPIPE, Errno::ECONNRESET, IOError => e
      error = e # the core (or the client) went away
    rescue Exception => e # rubocop:disable Lint/RescueException -- the app's failure is logged
      raise if e.is_a?(SystemExit) || e.is_a?(SignalException)

      error = e
      log_exception("Error in the Rack app while handling #{env['REQUEST_METHOD']} #{env['REQUEST_URI'] || env['PATH_INFO']}", e)
      unless written
        begin
          conn.write("HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nInternal Server Error\n")
        rescue StandardError
          nil
        end
      end
    ensure
      begin
        body.close if body.respond_to?(:close)
      rescue Exception => e # rubocop:disable Lint/RescueException
        log_exception('Error while closing the response body', e)
      end
      (env['rack.response_finished'] || []).reverse_each do |callback|
        callback.call(env, status, response_headers, error)
      rescue StandardError => e
        log_exception('Error in a rack.response_finished callback', e)
      end
      input.close if input.is_a?(Tempfile) || input.is_a?(File)
    end
  rescue BodyTooShort
    STDERR.write("The request body ended before CONTENT_LENGTH bytes; dropped the request\n")
  end

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
        handle(app, conn, password)
      rescue Errno::EPIPE, Errno::ECONNRESET, IOError
        nil
      ensure
        conn.close unless conn.closed?
      end
    end
  end

  def main
    STDOUT.sync = true
    STDERR.sync = true
    STDOUT.binmode
    options = read_options
    password = options['connect_password'].to_s
    app = load_app(options)
    server, path = create_server(options)
    at_exit { File.unlink(path) if File.exist?(path) }
    protocol('Ready')
    protocol("socket: main;unix:#{path};session;1")
    protocol('')
    serve(app, server, password)
    server.close
    exit(0)
  end
end

PassengerRackLoader.main if $PROGRAM_NAME == __FILE__
