# frozen_string_literal: true

module PassengerRs
  # One request of the session protocol: a 4-byte big-endian length, NUL-separated KEY/VALUE
  # pairs (the CGI environment and PASSENGER_CONNECT_PASSWORD), then CONTENT_LENGTH bytes of
  # body. The answer is an HTTP/1.1 response (status line, headers, body) on the same
  # connection, which ends when the loader closes it.
  #
  # Responses follow the Rack SPEC (Rack 2 and Rack 3):
  # - headers: each value line becomes one header line (Rack 2 joins multiple values with "\n",
  #   Rack 3 gives an Array); names are sent as the app gave them; `rack.*` headers and
  #   `Status` are never sent.
  # - bodies: `to_path` (a readable file) is sent with IO.copy_stream (sendfile), else `each`,
  #   else `call(stream)` (Rack 3 streaming body) with the connection as the stream; nothing for
  #   HEAD, 1xx, 204 and 304. `close` is always called on the body, even when the app or the
  #   connection fails. A small Array body (sent with the head) gets a Content-Length when the
  #   app gave none: a response of known length lets the core keep nginx's connection.
  # - full hijack (`env['rack.hijack'].call`): the app gets the connection and writes the whole
  #   response itself; the loader sends nothing more and does not close it. Partial hijack
  #   (a `rack.hijack` response header): the loader sends the head, then hands the connection
  #   to the callback, which closes it.
  # - out-of-band work: an app's `!~Request-OOB-Work: true` response header is passed on as
  #   exactly that line for the core, which strips it; the core later sends a pseudo-request
  #   with REQUEST_METHOD `OOBW`, which runs the `PhusionPassenger.on_event(:oob_work)`
  #   callbacks (not the app) and is answered `200` with an empty body once they are done.
  class RequestHandler
    # Bodies up to this size are kept in memory; larger ones go to an (unlinked) temp file.
    MAX_MEMORY_BODY = 1024 * 1024
    MAX_HEADER = 1024 * 1024
    OOB_WORK_HEADER = '!~Request-OOB-Work'
    OOB_WORK_LINE = "#{OOB_WORK_HEADER}: true\r\n"
    OOB_WORK_DONE = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    OOB_WORK_FAILED = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    INTERNAL_ERROR = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n" \
                     "Content-Length: 22\r\n\r\nInternal Server Error\n"
    # Arrays of small strings go out in one write with the head, up to this size.
    COALESCE_LIMIT = 64 * 1024
    # The first read of a connection: the whole session header, as a rule.
    FIRST_READ = 16 * 1024
    # At most this many response header names are remembered as checked (see header_name).
    HEADER_NAME_CACHE = 512
    INVALID_HEADER_NAME = /[\s:\x00-\x1f\x7f]/.freeze
    BINARY = Encoding::BINARY

    class BodyTooShort < StandardError; end

    # What became of one request's connection; also its full-hijack callable
    # (env['rack.hijack']), which hands the app the connection.
    class Exchange
      attr_accessor :env, :head_sent, :keep_open
      attr_reader :hijacked

      def initialize(conn)
        @conn = conn
        @env = nil
        @hijacked = false
        @head_sent = false
        @keep_open = false
      end

      def call
        @hijacked = true
        @env['rack.hijack_io'] = @conn
        @conn
      end
    end

    # Errors that mean the core (or the client behind it) went away.
    GONE = [Errno::EPIPE, Errno::ECONNRESET, Errno::ENOTCONN, IOError].freeze

    def self.log_exception(what, e)
      STDERR.write("#{what}: #{e.class}: #{e.message}\n#{(e.backtrace || []).map { |l| "    #{l}\n" }.join}")
    rescue IOError, SystemCallError
      nil
    end

    # `multithread`: rack.multithread, true when several threads serve the app.
    def initialize(app, password:, base_uri: nil, multithread: false)
      @app = app
      @password = password.to_s
      @env_builder = RackEnv.new(base_uri: base_uri, multithread: multithread)
      # Response header name => what to do with it (see header_name); status => status line.
      @header_names = {}
      @status_lines = {}
    end

    # Serves one connection. Returns :hijacked when the app took the connection over (the
    # caller must then leave it alone), :done otherwise (the connection is closed).
    def handle(conn)
      headers = read_session_header(conn)
      return :done unless headers

      unless PassengerRs.secure_compare(headers.delete('PASSENGER_CONNECT_PASSWORD'), @password)
        STDERR.write("Refused a session with a wrong connect password; only the core may connect to this socket\n")
        return :done
      end
      return out_of_band_work(conn) if headers['REQUEST_METHOD'] == 'OOBW'

      input = read_body(conn, headers['CONTENT_LENGTH'].to_i)
      serve(conn, headers, input)
    rescue BodyTooShort
      STDERR.write("The request body ended before CONTENT_LENGTH bytes; dropped the request\n")
      :done
    end

    private

    def read_exact(io, n)
      data = io.read(n)
      data && data.bytesize == n ? data : nil
    end

    # Reads the session header; nil when the connection is closed or the header is malformed.
    # One read takes the length and, as a rule, the whole header; bytes read past the header
    # (the start of the body) are pushed back into the connection's read buffer, where the body
    # reading (or an app that hijacks the connection) finds them.
    def read_session_header(conn)
      data = conn.readpartial(FIRST_READ)
      while data.bytesize < 4
        more = read_exact(conn, 4 - data.bytesize)
        return nil unless more

        data << more
      end
      len = data.unpack1('N')
      return nil if len > MAX_HEADER

      total = len + 4
      if data.bytesize < total
        more = read_exact(conn, total - data.bytesize)
        return nil unless more

        data << more
      elsif data.bytesize > total
        conn.ungetbyte(data.byteslice(total, data.bytesize - total))
      end
      parts = data.byteslice(4, len).split("\0", -1)
      parts.pop if parts.last == ''
      count = parts.size
      return nil if count.odd?

      # Hash[] takes the pairs in one C call; a very large header goes pair by pair rather than
      # as that many arguments.
      return Hash[*parts] if count <= 512

      headers = {}
      i = 0
      while i < count
        headers[parts[i]] = parts[i + 1]
        i += 2
      end
      headers
    rescue EOFError
      nil
    end

    # The request body as a rewindable binary IO holding exactly CONTENT_LENGTH bytes (Rack 2
    # requires rewind; Rack 3 allows it).
    def read_body(conn, length)
      if length <= MAX_MEMORY_BODY
        data = length.zero? ? ''.b : read_exact(conn, length)
        raise BodyTooShort unless data

        StringIO.new(data.force_encoding(Encoding::BINARY))
      else
        file = Tempfile.new('passenger-body')
        file.binmode
        file.unlink
        copied = IO.copy_stream(conn, file, length)
        raise BodyTooShort unless copied == length

        file.rewind
        file
      end
    end

    def out_of_band_work(conn)
      ok = begin
        Events.call(:oob_work)
        true
      rescue StandardError => e
        RequestHandler.log_exception('Error in a PhusionPassenger.on_event(:oob_work) callback', e)
        false
      end
      conn.write(ok ? OOB_WORK_DONE : OOB_WORK_FAILED)
      :done
    ensure
      close_quietly(conn)
    end

    # Calls the app and sends its response. The connection is closed at the end unless the app
    # hijacked it.
    def serve(conn, headers, input)
      state = Exchange.new(conn)
      env = state.env = @env_builder.build(headers, input, state)
      status = response_headers = body = error = nil
      begin
        status, response_headers, body = @app.call(env)
        # After a full hijack the app has answered on the connection itself: its return value
        # is ignored.
        send_response(conn, env, status, response_headers, body, state) unless state.hijacked
      rescue Exception => e # rubocop:disable Lint/RescueException -- reported, then re-raised if fatal
        error = e
        raise if e.is_a?(SystemExit) || e.is_a?(SignalException) || e.is_a?(NoMemoryError)

        report_failure(conn, env, e, state)
      ensure
        close_body(body)
        close_quietly(conn) unless state.hijacked || state.keep_open
        response_finished(env, status, response_headers, error)
        close_input(input)
      end
      state.hijacked || state.keep_open ? :hijacked : :done
    end

    def report_failure(conn, env, error, state)
      return if GONE.any? { |klass| error.is_a?(klass) } # the core went away: nobody to tell

      RequestHandler.log_exception(
        "Error in the Rack app while handling #{env['REQUEST_METHOD']} #{env['REQUEST_URI'] || env['PATH_INFO']}", error
      )
      # Once the head is out (or the app has the connection) all that can be done is to end
      # the response early.
      return if state.head_sent || state.hijacked || state.keep_open

      state.head_sent = true
      conn.write(INTERNAL_ERROR)
    rescue *GONE, SystemCallError
      nil
    end

    def send_response(conn, env, status, headers, body, state)
      # Rack 2: anything whose to_i is the status; Rack 3: an Integer.
      status = status.to_i
      raise ArgumentError, "the response status #{status} is not an HTTP status (100 or more)" if status < 100

      head, partial_hijack = render_head(status, headers)
      if partial_hijack
        state.head_sent = true
        conn.write(head)
        state.keep_open = true # the callback owns the connection, and closes it
        partial_hijack.call(conn)
      elsif env['REQUEST_METHOD'] == 'HEAD' || status < 200 || status == 204 || status == 304
        state.head_sent = true
        conn.write(head)
      elsif (path = file_path(body))
        state.head_sent = true
        conn.write(head)
        File.open(path, 'rb') { |file| IO.copy_stream(file, conn) }
      elsif body.respond_to?(:each)
        send_enumerable(conn, head, headers, body, state)
      elsif body.respond_to?(:call)
        state.head_sent = true
        conn.write(head)
        body.call(conn) # Rack 3 streaming body; the loader closes the stream after, if still open
      else
        raise TypeError, "the response body (#{body.class}) responds to neither each nor call"
      end
    end

    def send_enumerable(conn, head, headers, body, state)
      # Rack: `to_ary` gives the same chunks as `each` (Rails' bodies and Rack::BodyProxy have it).
      chunks = body.is_a?(Array) ? body : body.respond_to?(:to_ary) && body.to_ary
      if chunks.is_a?(Array) && (size = small_size(chunks))
        state.head_sent = true
        # Its length is known: said, it lets the core keep its connection from nginx for the
        # next request (as puma says it for Array bodies).
        head.insert(-3, "Content-Length: #{size}\r\n") unless declares_length?(headers)
        chunks.each { |chunk| head << binary(chunk.to_s) }
        conn.write(head)
        return
      end
      state.head_sent = true
      conn.write(head)
      body.each do |chunk|
        conn.write(chunk) unless chunk.empty?
      end
    end

    # The body's size in bytes if it is small enough to go out with the head, else nil.
    def small_size(body)
      size = 0
      body.each { |chunk| size += chunk.to_s.bytesize }
      size <= COALESCE_LIMIT ? size : nil
    end

    def declares_length?(headers)
      headers.any? { |name, _| name.to_s.casecmp?('content-length') || name.to_s.casecmp?('transfer-encoding') }
    end

    # `text`, or a binary copy when appending it to a binary string could change that string's
    # encoding (or fail).
    def binary(text)
      text.encoding == BINARY || text.ascii_only? ? text : text.b
    end

    # The path of the file a body stands for, when it is one that can be sent as is.
    def file_path(body)
      return nil unless body.respond_to?(:to_path)

      path = body.to_path
      path.is_a?(String) && File.file?(path) && File.readable?(path) ? path : nil
    end

    # The status line and header lines; and the partial-hijack callback, if the app set one.
    def render_head(status, headers)
      out = status_line(status).dup
      partial_hijack = nil
      oob_work = false
      headers.each do |name, value|
        kind = header_name(name)
        case kind
        when String
          if value.is_a?(String) && plain_value?(value)
            out << kind << value << "\r\n"
          else
            header_values(value).each { |v| add_header(out, kind, v) }
          end
        when :hijack
          partial_hijack = value if value.respond_to?(:call)
        when :oob_work
          oob_work ||= header_values(value).any? { |v| v.strip.casecmp?('true') }
        when :invalid
          STDERR.write("Dropped a response header with an invalid name: #{name.to_s.inspect}\n")
        end
      end
      out << OOB_WORK_LINE if oob_work
      out << "\r\n"
      [out, partial_hijack]
    end

    # `prefix`: "Name: ".
    def add_header(out, prefix, value)
      value = value.to_s
      value = value.b.delete("\r\0") if value.include?("\r") || value.include?("\0")
      out << prefix << binary(value) << "\r\n"
    end

    # A header value that goes out as it is: one line, nothing to strip, nothing to re-encode.
    def plain_value?(value)
      !value.empty? && !value.include?("\n") && !value.include?("\r") && !value.include?("\0") &&
        (value.encoding == BINARY || value.ascii_only?)
    end

    # What a response header name stands for: "Name: " to send (a frozen binary String), or
    # :hijack (`rack.hijack`), :skip (other `rack.*` names, `Status`), :oob_work, :invalid.
    # Remembered per name, as apps send the same few names over and over.
    def header_name(name)
      kind = @header_names[name]
      return kind if kind

      text = name.to_s
      kind = if text.start_with?('rack.') then text == 'rack.hijack' ? :hijack : :skip
             elsif text.casecmp?('status') then :skip
             elsif text.casecmp?(OOB_WORK_HEADER) then :oob_work
             elsif text.empty? || text.match?(INVALID_HEADER_NAME) then :invalid
             else (text.b << ': ').freeze
             end
      if name.is_a?(String) && @header_names.size < HEADER_NAME_CACHE
        @header_names[name.frozen? ? name : name.dup.freeze] = kind
      end
      kind
    end

    # Rack 3: a String or an Array of Strings; Rack 2: a String of "\n"-separated lines.
    def header_values(value)
      (value.is_a?(Array) ? value : [value]).flat_map { |v| v.to_s.split("\n") }
    end

    # "HTTP/1.1 <status> <reason>\r\n", a frozen binary String.
    def status_line(status)
      line = @status_lines[status]
      return line if line

      line = "HTTP/1.1 #{status} #{Rack::Utils::HTTP_STATUS_CODES[status] || 'Unknown'}\r\n".b.freeze
      @status_lines[status] = line if status < 1000
      line
    end

    def close_body(body)
      body.close if body.respond_to?(:close)
    rescue Exception => e # rubocop:disable Lint/RescueException -- logged, the next request goes on
      raise if e.is_a?(SystemExit) || e.is_a?(SignalException) || e.is_a?(NoMemoryError)

      RequestHandler.log_exception('Error while closing the response body', e)
    end

    # Rack 3: run after the response was sent, in reverse order of registration.
    def response_finished(env, status, headers, error)
      callbacks = env && env['rack.response_finished']
      return unless callbacks.respond_to?(:reverse_each)

      callbacks.reverse_each do |callback|
        callback.call(env, status, headers, error)
      rescue StandardError => e
        RequestHandler.log_exception('Error in a rack.response_finished callback', e)
      end
    end

    def close_input(input)
      input.close if input.is_a?(Tempfile) || input.is_a?(File)
    rescue IOError
      nil
    end

    def close_quietly(conn)
      conn.close unless conn.closed?
    rescue IOError, SystemCallError
      nil
    end
  end
end
