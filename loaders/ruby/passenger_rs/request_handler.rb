# frozen_string_literal: true

module PassengerRs
  # One request of the session protocol: a 4-byte big-endian length, NUL-separated KEY/VALUE
  # pairs (the CGI environment and PASSENGER_CONNECT_PASSWORD), then the body. The answer is an
  # HTTP/1.1 response written to the same connection, which the caller then closes.
  module RequestHandler
    # Bodies up to this size are kept in memory; larger ones go to a temp file.
    MAX_MEMORY_BODY = 1024 * 1024
    MAX_HEADER = 1024 * 1024

    class BodyTooShort < StandardError; end

    module_function

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

    # Serves one connection: one request, one response. The caller closes the connection.
    def handle(app, conn, password)
      headers = read_session_header(conn)
      return unless headers

      unless PassengerRs.secure_compare(headers.delete('PASSENGER_CONNECT_PASSWORD'), password)
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
  end
end
