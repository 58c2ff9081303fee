# frozen_string_literal: true

module PassengerRs
  # MessageChannel arrays (DESIGN.md, "Wire formats"): a 2-byte big-endian length of the body,
  # then the items, each terminated by a NUL byte.
  module MessageChannel
    MAX_BODY = 0xFFFF

    module_function

    def encode_array(items)
      body = items.map { |item| item.to_s.b.delete("\0") + "\0" }.join
      raise ArgumentError, "a MessageChannel array holds at most #{MAX_BODY} bytes" if body.bytesize > MAX_BODY

      [body.bytesize].pack('n') + body
    end

    def write_array(io, items)
      io.write(encode_array(items))
    end

    # Reads one array; nil when the peer closes first, sends something that is not an array,
    # or takes longer than `timeout` seconds.
    def read_array(io, timeout)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      len = read_exact(io, 2, deadline)&.unpack1('n')
      return nil unless len

      body = read_exact(io, len, deadline)
      return nil unless body

      items = body.split("\0", -1)
      # The last item ends with a NUL, which leaves an empty string after it.
      return nil unless items.pop == ''

      items
    end

    def read_exact(io, n, deadline)
      data = +''.b
      while data.bytesize < n
        chunk = io.read_nonblock(n - data.bytesize, exception: false)
        case chunk
        when nil then return nil
        when :wait_readable
          left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          return nil if left <= 0 || IO.select([io], nil, nil, left).nil?
        else data << chunk
        end
      end
      data
    end
  end
end
