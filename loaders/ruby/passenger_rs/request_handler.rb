# frozen_string_literal: true

module PassengerRs
  # One request of the session protocol: a 4-byte big-endian length, NUL-separated KEY/VALUE
  # pairs (the CGI environment and PASSENGER_CONNECT_PASSWORD), then CONTENT_LENGTH bytes of
  # body. The answer is an HTTP/1.1 response (status line, headers, body) on the same
  # connection.
  #
  # Keep-alive (see handle): the connection then carries the core's next request when the
  # response was delimited (HEAD, 1xx but 101, 204, 304; or exactly one Content-Length and that
  # many body bytes), not hijacked, not OOBW, nothing failed, and the loader is not stopping.
  # Otherwise it is closed after the response, and the head says `Connection: close` whenever
  # that is known before it goes out. A body longer than its Content-Length is cut there.
  #
  # Responses follow the Rack SPEC (Rack 2 and Rack 3):
  # - headers: each value line becomes one header line (Rack 2 joins multiple values with "\n",
  #   Rack 3 gives an Array); names are sent as the app gave them; `rack.*` headers and
  #   `Status` are never sent.
  # - bodies: `to_path` (a readable file) is sent with IO.copy_stream (sendfile), else `each`,
  #   else `call(stream)` (Rack 3 streaming body) with the connection as the stream; nothing for
  #   HEAD, 1xx, 204 and 304. `close` is always called on the body, even when the app or the
  #   connection fails. A small Array body (sent with the head) and a to_path body get a
  #   Content-Length when the app gave none: a response of known length lets the core keep its
  #   connections (to nginx and to this process).
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
    OOB_WORK_DONE = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    OOB_WORK_FAILED = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    INTERNAL_ERROR = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n" \
                     "Content-Length: 22\r\nConnection: close\r\n\r\nInternal Server Error\n"
    CLOSE_LINE = "Connection: close\r\n"
    CONTENT_LENGTH_PREFIX = 'Content-Length: '
    CRLF = "\r\n"
    # Response header names that decide whether the connection can be kept, as header_name
    # renders them (compared case-insensitively, only for prefixes of these sizes).
    CONTENT_LENGTH = 'content-length: '
    TRANSFER_ENCODING = 'transfer-encoding: '
    CONNECTION = 'connection: '
    LENGTH_VALUE = /\A[0-9]{1,18}\z/.freeze
    CLOSE_TOKEN = /close/i.freeze
    # Arrays of small strings go out in one write with the head, up to this size.
    COALESCE_LIMIT = 64 * 1024
    # The first read of a connection: the whole session header, as a rule.
    FIRST_READ = 16 * 1024
    # At most this many response header names are remembered as checked (see header_name).
    HEADER_NAME_CACHE = 512
    INVALID_HEADER_NAME = /[\s:\x00-\x1f\x7f]/.freeze
    LINE_BREAK_OR_NUL = /[\r\n\0]/n.freeze
    BINARY = Encoding::BINARY

    class BodyTooShort < StandardError; end

    # What became of one request's connection; also its full-hijack callable
    # (env['rack.hijack']), which hands the app the connection. keep_open: a partial-hijack
    # callback owns the connection. The framing headers the app gave are noted by render_head.
    class Exchange
      attr_accessor :env, :head_sent, :keep_open, :partial_hijack, :length, :lengths, :chunked, :app_close
      attr_reader :hijacked

      def initialize(conn)
        @conn = conn
        @env = nil
        @hijacked = false
        @head_sent = false
        @keep_open = false
        @partial_hijack = nil
        @length = nil # the last Content-Length value: an Integer, or nil if not a length
        @lengths = 0 # how many Content-Length lines went out
        @chunked = false # a Transfer-Encoding line went out
        @app_close = false # the app's own `Connection: close`
      end

      # The app's Content-Length when it alone delimits the body, else nil.
      def declared_length
        @lengths == 1 && !@chunked ? @length : nil
      end

      # No framing header from the app: the loader may add a Content-Length.
      def undeclared?
        @lengths.zero? && !@chunked
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

    # `multithread`: rack.multithread, true when several threads serve the app. `keep_alive`:
    # whether connections may carry more than one request (see Worker.run).
    def initialize(app, password:, base_uri: nil, multithread: false, keep_alive: true)
      @app = app
      @keep_alive = keep_alive
      @stopping = false
      # Binary, as the header's values: compared byte for byte.
      @password = password.to_s.b.freeze
      @env_builder = RackEnv.new(base_uri: base_uri, multithread: multithread)
      # Response header name => what to do with it (see header_name); status => status line.
      @header_names = {}
      @status_lines = {}
    end

    # From now on every response says `Connection: close` (unless its head is out already).
    def stop!
      @stopping = true
    end

    # Serves one request of a connection. Returns :keep when the connection may carry the
    # next request (call again), :hijacked when the app took the connection over (the caller
    # must then leave it alone), :done otherwise (the connection is closed, or must be).
    # `idle` (SessionServer::IdleConnections): given when waiting for a request on a kept
    # connection, so that stopping can wake this thread up. `buffer`: a binary String the
    # connection's requests are read into (kept from one request to the next, it spares a 16 KB
    # allocation per request); nil for a new one. `kept`: the connection carried a request
    # before (true when `idle` is given).
    def handle(conn, idle = nil, buffer = nil, kept: !idle.nil?)
      data = first_read(conn, idle, buffer)
      headers = data && read_session_header(conn, data)
      return :done unless headers

      unless password?(headers.delete('PASSENGER_CONNECT_PASSWORD'), kept)
        STDERR.write("Refused a session with a wrong connect password; only the core may connect to this socket\n")
        return :done
      end
      return out_of_band_work(conn) if headers['REQUEST_METHOD'] == 'OOBW'

      input = read_body(conn, headers['CONTENT_LENGTH'].to_i, past_header(data))
      # A header larger than a first read grew the connection's buffer: not kept that large.
      data.clear if data.bytesize > FIRST_READ
      serve(conn, headers, input)
    rescue BodyTooShort
      STDERR.write("The request body ended before CONTENT_LENGTH bytes; dropped the request\n")
      :done
    end

    private

    # Whether the session header's password is the connect password. A kept connection
    # (`kept`) showed it with its first request, so its peer knows it: a plain comparison, whose
    # time depends on where the strings differ, tells that peer nothing. A new connection's
    # peer may not know it: compared in constant time.
    def password?(given, kept)
      kept ? given == @password : PassengerRs.secure_compare(given, @password)
    end

    def read_exact(io, n)
      data = io.read(n)
      data && data.bytesize == n ? data : nil
    end

    # The first bytes of a request (in `buffer`, if given): as a rule, the whole session header;
    # nil at EOF. On a kept connection (`idle`) it is registered as idle meanwhile, and nil once
    # the loader stops.
    #
    # A kept connection is waited on with wait_readable (poll for input), not in the read: a
    # thread asleep in read() on a unix socket is also woken each time the core reads what this
    # thread last sent (the kernel's "room to write" wakeup reaches readers too), and goes back
    # to sleep. That is a context switch per response, on this process's CPU and the core's.
    def first_read(conn, idle, buffer)
      return conn.readpartial(FIRST_READ, buffer) unless idle
      return nil unless idle.enter(conn)

      begin
        conn.wait_readable # ends on input, EOF, or IdleConnections#stop's shutdown
        conn.readpartial(FIRST_READ, buffer)
      ensure
        idle.leave(conn)
      end
    rescue EOFError
      nil
    end

    # Reads the session header that `data` (the first read) starts; nil when the connection is
    # closed or the header is malformed. What is read of it is appended to `data`, which then
    # holds the whole header and maybe the start of the body (see past_header).
    def read_session_header(conn, data)
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
      end
      if len > 1 && data.getbyte(total - 1).zero?
        # Split without the last NUL: no empty last part to drop; and the slice is a copy, not
        # a substring that shares `data` (one that runs to its end does), which would make the
        # next read into the same buffer allocate a new one.
        parts = data.byteslice(4, len - 1).split("\0", -1)
      else
        parts = data.byteslice(4, len).split("\0", -1)
        parts.pop if parts.last == ''
      end
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
    end

    # The bytes of `data` past the session header (the start of the body), as a new String.
    # (Not pushed back with ungetbyte: that fails once an earlier request of the connection
    # sized its read buffer smaller.)
    def past_header(data)
      total = data.unpack1('N') + 4
      data.bytesize > total ? data.byteslice(total, data.bytesize - total) : String.new
    end

    # The request body as a rewindable binary IO holding exactly CONTENT_LENGTH bytes (Rack 2
    # requires rewind; Rack 3 allows it). `start`: its first bytes, read with the header.
    def read_body(conn, length, start)
      if start.bytesize > length
        # Bytes past the body (none as a rule: the core sends the next request only after the
        # response) stay in the connection's buffer for an app that hijacks it.
        conn.ungetbyte(start.byteslice(length, start.bytesize - length))
        start = start.byteslice(0, length)
      end
      if length <= MAX_MEMORY_BODY
        if start.bytesize < length
          more = read_exact(conn, length - start.bytesize)
          raise BodyTooShort unless more

          start = start.empty? ? more : start << more
        end
        StringIO.new(start.force_encoding(BINARY))
      else
        file = Tempfile.new('passenger-body')
        file.binmode
        file.unlink
        file.write(start)
        copied = IO.copy_stream(conn, file, length - start.bytesize)
        raise BodyTooShort unless copied == length - start.bytesize

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
    # hijacked it or it is kept for the next request (:keep).
    def serve(conn, headers, input)
      state = Exchange.new(conn)
      env = state.env = @env_builder.build(headers, input, state)
      status = response_headers = body = error = nil
      keep = false
      begin
        status, response_headers, body = @app.call(env)
        # After a full hijack the app has answered on the connection itself: its return value
        # is ignored.
        keep = send_response(conn, env, status, response_headers, body, state) unless state.hijacked
      rescue Exception => e # rubocop:disable Lint/RescueException -- reported, then re-raised if fatal
        error = e
        keep = false
        raise if e.is_a?(SystemExit) || e.is_a?(SignalException) || e.is_a?(NoMemoryError)

        report_failure(conn, env, e, state)
      ensure
        close_body(body)
        # Closing before the callbacks below ends an undelimited response for the core now.
        close_quietly(conn) unless keep || state.hijacked || state.keep_open
        response_finished(env, status, response_headers, error)
        close_input(input)
      end
      if state.hijacked || state.keep_open then :hijacked
      elsif keep then :keep
      else :done
      end
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

    # Sends the response; true when the connection may carry the next request.
    def send_response(conn, env, status, headers, body, state)
      # Rack 2: anything whose to_i is the status; Rack 3: an Integer.
      status = status.to_i
      raise ArgumentError, "the response status #{status} is not an HTTP status (100 or more)" if status < 100

      head = render_head(status, headers, state)
      keep = @keep_alive && !@stopping && !state.app_close
      if (callback = state.partial_hijack)
        state.head_sent = true
        conn.write(end_head(head, false, state, status))
        state.keep_open = true # the callback owns the connection, and closes it
        callback.call(conn)
        false
      elsif env['REQUEST_METHOD'] == 'HEAD' || status < 200 || status == 204 || status == 304
        # No body: delimited, except that a 101 turns the connection into something else.
        keep &&= status != 101
        state.head_sent = true
        conn.write(end_head(head, keep, state, status))
        keep
      elsif (path = file_path(body))
        send_file(conn, head, path, keep, state)
      elsif body.respond_to?(:each)
        send_enumerable(conn, head, body, keep, state)
      elsif body.respond_to?(:call)
        # Rack 3 streaming body: it ends when the stream is closed (by it, or after it).
        state.head_sent = true
        conn.write(end_head(head, false, state, status))
        body.call(conn)
        false
      else
        raise TypeError, "the response body (#{body.class}) responds to neither each nor call"
      end
    end

    # Ends the head, saying `Connection: close` when the connection will not carry another
    # request (unless the app said it, or it is a 101: its head says what the connection becomes).
    def end_head(head, keep, state, status = 200)
      head << CLOSE_LINE unless keep || state.app_close || status == 101
      head << "\r\n"
    end

    def send_file(conn, head, path, keep, state)
      File.open(path, 'rb') do |file|
        size = file.size
        length = state.declared_length
        if length.nil? && state.undeclared?
          head << "Content-Length: #{size}\r\n" # known for free: lets the connection be kept
          length = size
        end
        # A file shorter than the declared length is known before the head goes out.
        keep &&= !length.nil? && length <= size
        state.head_sent = true
        conn.write(end_head(head, keep, state))
        unless length
          IO.copy_stream(file, conn)
          return false
        end
        log_cut(length) if size > length
        IO.copy_stream(file, conn, length) == length && keep
      end
    end

    def send_enumerable(conn, head, body, keep, state)
      length = state.declared_length
      # Rack: `to_ary` gives the same chunks as `each` (Rails' bodies and Rack::BodyProxy have it).
      chunks = body.is_a?(Array) ? body : body.respond_to?(:to_ary) && body.to_ary
      chunks = nil unless chunks.is_a?(Array)
      if chunks
        size = byte_size(chunks)
        if length.nil? && state.undeclared?
          # Its length is known: said, it lets the core keep its connections (as puma says it
          # for Array bodies).
          head << CONTENT_LENGTH_PREFIX << size.to_s << CRLF
          length = size
        end
      end
      if chunks && size <= COALESCE_LIMIT
        keep &&= !length.nil? && length <= size
        end_head(head, keep, state)
        chunks.each { |chunk| head << binary(chunk.to_s) }
        if length && size > length
          log_cut(length)
          head = head.byteslice(0, head.bytesize - (size - length))
        end
        state.head_sent = true
        conn.write(head)
        return keep
      end
      keep &&= !length.nil?
      state.head_sent = true
      conn.write(end_head(head, keep, state))
      unless length
        send_chunks(conn, chunks || body)
        return false
      end
      # Counted, and cut at the declared length: a body that ends early closes the connection.
      # (An Array from to_ary is what to write: Rack lets to_ary close the body.)
      left = length
      (chunks || body).each do |chunk|
        next if chunk.empty?

        if chunk.bytesize > left
          conn.write(chunk.byteslice(0, left)) if left.positive?
          left = 0
          log_cut(length)
          break
        end
        conn.write(chunk)
        left -= chunk.bytesize
      end
      keep && left.zero?
    end

    def send_chunks(conn, body)
      body.each do |chunk|
        conn.write(chunk) unless chunk.empty?
      end
    end

    def log_cut(length)
      STDERR.write("The response body is longer than its Content-Length (#{length}); sent only #{length} bytes\n")
    rescue IOError, SystemCallError
      nil
    end

    # The size in bytes of an Array body.
    def byte_size(chunks)
      size = 0
      chunks.each { |chunk| size += chunk.to_s.bytesize }
      size
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

    # The status line and header lines, without the empty line that ends the head. Notes in
    # `state` the partial-hijack callback, if the app set one, and the framing headers.
    def render_head(status, headers, state)
      out = status_line(status).dup
      oob_work = false
      headers.each do |name, value|
        kind = header_name(name)
        case kind
        when String
          if value.is_a?(String) && plain_value?(value)
            out << kind << value << "\r\n"
            case kind.bytesize
            when 12, 16, 19 then note_framing(state, kind, value)
            end
          else
            header_values(value).each do |v|
              add_header(out, kind, v)
              case kind.bytesize
              when 12, 16, 19 then note_framing(state, kind, v)
              end
            end
          end
        when :hijack
          state.partial_hijack = value if value.respond_to?(:call)
        when :oob_work
          oob_work ||= header_values(value).any? { |v| v.strip.casecmp?('true') }
        when :invalid
          STDERR.write("Dropped a response header with an invalid name: #{name.to_s.inspect}\n")
        end
      end
      out << OOB_WORK_LINE if oob_work
      out
    end

    # `prefix` is "Name: " of a name of the size of Content-Length, Transfer-Encoding or
    # Connection: notes what it says about the response's end.
    def note_framing(state, prefix, value)
      if prefix.casecmp?(CONTENT_LENGTH)
        state.lengths += 1
        state.length = LENGTH_VALUE.match?(value) ? value.to_i : nil
      elsif prefix.casecmp?(TRANSFER_ENCODING)
        state.chunked = true
      elsif prefix.casecmp?(CONNECTION)
        state.app_close ||= CLOSE_TOKEN.match?(value)
      end
    end

    # `prefix`: "Name: ".
    def add_header(out, prefix, value)
      value = value.to_s
      value = value.b.delete("\r\0") if value.include?("\r") || value.include?("\0")
      out << prefix << binary(value) << "\r\n"
    end

    # A header value that goes out as it is: one line, nothing to strip, nothing to re-encode.
    # (The encoding first: a regexp raises on a String that is not valid in its encoding.)
    def plain_value?(value)
      (value.encoding == BINARY || value.ascii_only?) && !value.empty? && !LINE_BREAK_OR_NUL.match?(value)
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
