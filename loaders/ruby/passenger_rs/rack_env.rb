# frozen_string_literal: true

module PassengerRs
  # Builds the Rack environment of one request from the session header (the CGI variables the
  # core sends) and the request body, to the letter of the Rack SPEC (Rack 2.2 and Rack 3):
  #
  # - SCRIPT_NAME / PATH_INFO: the base URI (handshake key `base_uri`, e.g. `/sub`) is split
  #   off the path on a path-segment boundary (`/sub` and `/sub/x` match, `/subway` does not).
  #   nginx sends PATH_INFO percent-decoded and normalised; Rack apps expect the raw, still
  #   percent-encoded path, so PATH_INFO is taken from REQUEST_URI's path part whenever that
  #   decodes to the PATH_INFO nginx sent. When it does not (nginx rewrote the URI, or
  #   normalised `/a/../b`), the path nginx routed is used, percent-encoded again.
  # - QUERY_STRING, SERVER_NAME, SERVER_PORT, SERVER_PROTOCOL always present.
  # - rack.* keys: version, url_scheme (from HTTPS), input (rewindable), errors, multithread,
  #   multiprocess, run_once, hijack?/hijack (full hijack), response_finished (Rack 3).
  #
  # All CGI values are binary (ASCII-8BIT) strings, unfrozen, as the SPEC asks.
  class RackEnv
    attr_reader :base_uri

    HTTPS_ON = %w[on 1 true yes].freeze
    BINARY = Encoding::BINARY
    EMPTY = ''.b.freeze
    SLASH = '/'.ord
    QUESTION_MARK = '?'.ord
    HASH_MARK = '#'.ord
    # A PATH_INFO byte that REQUEST_URI's path would not show as is (or would end before).
    PATH_TO_DECODE = /[%?#]/n.freeze

    # `base_uri`: the handshake's base_uri ('' or '/' for an app at the root).
    # `multithread`: whether other threads of this process may call the app at the same time.
    def initialize(base_uri:, multithread:)
      @base_uri = normalise_base(base_uri)
      @multithread = multithread
      @rack_version = rack_version
      @rack3 = RackEnv.rack3?
    end

    def self.rack3?
      release = if defined?(Rack::RELEASE) then Rack::RELEASE
                elsif Rack.respond_to?(:release) then Rack.release
                else '2'
                end
      release.to_s.to_i >= 3
    end

    # Turns the session header (a Hash of binary strings, the password already removed) into
    # the Rack env. `input` is the request body (rewindable IO), `hijack` a callable for
    # rack.hijack.
    def build(env, input, hijack)
      # (Per request: the checks are inlined rather than method calls.)
      method = env['REQUEST_METHOD']
      env['REQUEST_METHOD'] = bin('GET') if method.nil? || method.empty?
      env['QUERY_STRING'] ||= bin('')
      split_path(env)
      https = (flag = env['HTTPS']) ? HTTPS_ON.include?(flag.downcase) : false
      server_defaults(env, https)
      env.delete('CONTENT_TYPE') if env['CONTENT_TYPE'] == ''
      env.delete('CONTENT_LENGTH') if env['CONTENT_LENGTH'] == ''
      # Rack: CONTENT_TYPE/CONTENT_LENGTH, never their HTTP_ forms.
      env.delete('HTTP_CONTENT_TYPE')
      env.delete('HTTP_CONTENT_LENGTH')
      # Rack 3: HTTP_VERSION, if present, must equal SERVER_PROTOCOL. Only a client's
      # non-standard `Version:` header produces it.
      if @rack3 && (version = env['HTTP_VERSION']) && version != env['SERVER_PROTOCOL']
        env.delete('HTTP_VERSION')
      end

      env['rack.version'] = @rack_version
      env['rack.url_scheme'] = https ? 'https' : 'http'
      env['rack.input'] = input
      env['rack.errors'] = STDERR
      env['rack.multithread'] = @multithread
      env['rack.multiprocess'] = true
      env['rack.run_once'] = false
      env['rack.hijack?'] = true
      env['rack.hijack'] = hijack
      env['rack.response_finished'] = []
      env
    end

    # --- paths ------------------------------------------------------------------------------

    # Percent-decodes a binary string (not '+': that is only a space in query strings).
    def self.unescape(text)
      return text.b unless text.include?('%')

      text.b.gsub(/%[0-9A-Fa-f]{2}/n) { |m| m[1, 2].hex.chr }
    end

    # Percent-encodes what RFC 3986 does not allow as is in a path: everything but `pchar`
    # (unreserved, sub-delims, ':' and '@') and '/'.
    def self.escape_path(text)
      text.b.gsub(/[^A-Za-z0-9\-._~!$&'()*+,;=:@\/]/n) { |c| format('%%%02X', c.ord) }
    end

    private

    def bin(text)
      text.b
    end

    def blank?(value)
      value.nil? || value.empty?
    end

    def normalise_base(base)
      base = base.to_s.b.sub(%r{/+\z}n, '')
      base.empty? || !base.start_with?('/') ? nil : base
    end

    # The raw path of REQUEST_URI ("/a%20b" of "/a%20b?x=1"); nil when there is none (no
    # REQUEST_URI, or `*`). An absolute-form URI ("http://host/path") gives its path.
    def raw_request_path(env)
      uri = env['REQUEST_URI']
      return nil if blank?(uri)

      uri = uri.b unless uri.encoding == BINARY
      cut = uri.index('?')
      hash = uri.index('#')
      cut = hash if hash && (cut.nil? || hash < cut)
      # A new String in any case: PATH_INFO must not be the REQUEST_URI object itself.
      path = uri.byteslice(0, cut || uri.bytesize)
      path = path.sub(%r{\A[A-Za-z][A-Za-z0-9+.\-]*://[^/]*}n, '') unless path.start_with?('/')
      path.start_with?('/') ? path : nil
    end

    # Whether `decoded` (nginx's PATH_INFO) is a binary path with no `%`, `?` or `#`, and `uri`
    # (REQUEST_URI) is that path, or that path and then a query or fragment: the raw path is
    # then PATH_INFO itself.
    def root_path_as_sent?(uri, decoded)
      decoded.is_a?(String) && uri.is_a?(String) && decoded.getbyte(0) == SLASH &&
        decoded.encoding == BINARY && uri.encoding == BINARY && uri.start_with?(decoded) &&
        ((after = uri.getbyte(decoded.bytesize)).nil? || after == QUESTION_MARK || after == HASH_MARK) &&
        !PATH_TO_DECODE.match?(decoded)
    end

    # Whether the raw path `raw` decodes to `decoded` (a binary String).
    def decodes_to?(raw, decoded)
      raw.include?('%') ? RackEnv.unescape(raw) == decoded : raw == decoded
    end

    # Sets SCRIPT_NAME and PATH_INFO (see the class comment).
    def split_path(env)
      decoded = env['PATH_INFO']
      script = env['SCRIPT_NAME']
      # The common case first, in a few checks: an app without a base URI, and REQUEST_URI's
      # path being PATH_INFO byte for byte (nothing in it to decode). The general code below
      # comes to the same.
      if @base_uri.nil? && (script.nil? || script.empty? || script == '/') && root_path_as_sent?(env['REQUEST_URI'], decoded)
        env['SCRIPT_NAME'] = EMPTY.dup
        return
      end

      script = script.nil? || script.empty? || script == '/' ? EMPTY : script.b
      # A frontend that split the path itself (SCRIPT_NAME set, PATH_INFO the rest).
      decoded = script + decoded.to_s if !script.empty? && decoded && !segment_prefix?(decoded.b, script)
      # The frontend's SCRIPT_NAME names the base URI this request came in under; the
      # handshake's is the one the process was spawned for (an app served under two base URIs
      # shares its processes).
      base = script.empty? ? @base_uri : script

      raw = raw_request_path(env)
      decoded = decoded.b if decoded && decoded.encoding != BINARY
      path = if decoded.nil? || decoded.empty?
               raw || bin('/')
             elsif raw && decodes_to?(raw, decoded)
               raw
             else
               RackEnv.escape_path(decoded)
             end
      script_name, path_info = split_base(path, base) if base
      script_name ||= bin('')
      path_info ||= path
      path_info = bin('/') if script_name.empty? && path_info.empty?
      env['SCRIPT_NAME'] = script_name
      env['PATH_INFO'] = path_info
    end

    def segment_prefix?(path, prefix)
      path == prefix || path.start_with?("#{prefix}/")
    end

    # Splits a raw path at the first segment boundary where the part before, decoded, is the
    # base URI: returns [script_name, path_info], or nil when the path is not under the base.
    def split_base(path, base)
      return nil unless segment_prefix?(RackEnv.unescape(path), base)

      index = 0
      while index
        boundary = path.index('/', index + 1) || path.bytesize
        prefix = path.byteslice(0, boundary)
        return [prefix, path.byteslice(boundary..)] if RackEnv.unescape(prefix) == base
        break if boundary >= path.bytesize

        index = boundary
      end
      nil
    end

    def server_defaults(env, https)
      name = env['SERVER_NAME']
      if name.nil? || name.empty?
        host = env['HTTP_HOST'].to_s.b.sub(/:\d*\z/n, '')
        env['SERVER_NAME'] = host.empty? ? bin('localhost') : host
      end
      port = env['SERVER_PORT']
      env['SERVER_PORT'] = bin(https ? '443' : '80') if port.nil? || port.empty?
      protocol = env['SERVER_PROTOCOL']
      env['SERVER_PROTOCOL'] = bin('HTTP/1.1') if protocol.nil? || protocol.empty?
    end

    def rack_version
      defined?(Rack::VERSION) && Rack::VERSION.is_a?(Array) ? Rack::VERSION : [1, 3]
    end
  end
end
