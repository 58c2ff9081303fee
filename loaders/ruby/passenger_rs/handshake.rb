# frozen_string_literal: true

module PassengerRs
  # The loader handshake with the core over stdin/stdout (DESIGN.md, "Loader protocol"): the
  # greeting, the options, the Ready report and the error block. Lines starting with `!> ` are
  # the protocol; anything else on stdout is the app's own output.
  module Handshake
    PROTOCOL_VERSION = '1.0'

    module_function

    # Stdout and stderr unbuffered, so that the core sees each line as soon as it is written.
    def prepare_stdio
      STDOUT.sync = true
      STDERR.sync = true
      STDOUT.binmode
    end

    def protocol(line)
      STDOUT.write("!> #{line}\n")
    end

    # Greets the core and reads its options (`key: value` lines up to an empty line).
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

    # Tells the core the process is ready, and on which socket (`name;unix:path;protocol;n`).
    def report_ready(socket_spec, prefetch = 0)
      protocol('Ready')
      protocol("socket: #{socket_spec}")
      protocol("prefetch: #{prefetch}") if prefetch.positive?
      protocol('')
    end

    # Reports a start-up failure to the core and exits at once (exit! skips at_exit handlers,
    # which may belong to a half-loaded app).
    def fail_startup(summary, exception = nil)
      protocol('Error')
      protocol('html: false')
      STDOUT.write("#{summary}\n")
      if exception
        STDOUT.write("#{exception.class}: #{exception.message}\n")
        (exception.backtrace || []).each { |l| STDOUT.write("    #{l}\n") }
      end
      STDOUT.flush
    rescue SystemCallError, IOError
      nil # the core is gone: nobody to tell
    ensure
      exit!(1)
    end
  end
end
