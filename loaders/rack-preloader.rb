#!/usr/bin/env ruby
# frozen_string_literal: true
#
# passenger-rs Rack preloader (smart spawning): loads the app once, then forks ready app
# processes on demand, so that each new process skips the app's boot time.
#
# Started by the core agent as `ruby rack-preloader.rb` in the app root, stdin and stdout being
# pipes to the core. The handshake is the loader's (see rack-loader.rb), with one more option,
# `max_preloader_idle_time` (seconds, 0 = never, 300 when absent):
#
#   preloader: !> I have control 1.0
#   core:      You have control 1.0
#   core:      key: value          (app_root, startup_file, environment, connect_password,
#   core:      ...                  socket_dir, max_preloader_idle_time, ...)
#   core:      (empty line)
#   preloader: !> Ready            (or the `!> Error` block and exit 1 if the app fails to load)
#   preloader: !> socket: spawn;unix:<socket_dir>/preloader.<16 hex>;preloader;0
#   preloader: !>                  (with a trailing space)
#
# The socket (mode 0600) takes one connection at a time, one command per connection, in
# MessageChannel arrays (2-byte big-endian body length, then items each ending with NUL):
#
#   core:      ["spawn", <connect_password>]
#   preloader: ["ok", "<child pid>"] in one sendmsg with SCM_RIGHTS fds: the write end of the
#              child's stdin, the read end of its stdout, the read end of its stderr
#              ["error", "wrong password"] / ["error", <why>] otherwise
#   then the preloader closes the connection.
#
# The child has its own session (setsid) and those pipes as fds 0/1/2, and starts over the
# loader handshake on them: `!> I have control 1.0`, then it reads `You have control 1.0` and
# fresh options (its own connect_password and socket_dir; thread_count and base_uri as for a
# direct loader), calls the app's :starting_worker_process callbacks with forked = true, and
# reports `!> Ready`, `!> socket: main;unix:<path>;session;<thread_count>`, `!> `. It then
# serves the session protocol like the direct loader (threads, OOBW and all), until a byte or
# EOF on its stdin. The app's bundle (Gemfile) is set up once, in the preloader.
#
# The preloader reaps its children, and exits (removing its socket) on a byte or EOF on its stdin,
# or after max_preloader_idle_time seconds without a spawn command. Its children live on.
#
# Driving it by hand, in an app's root:
#
#   ruby /path/to/loaders/rack-preloader.rb
#   You have control 1.0
#   connect_password: secret
#   socket_dir: /tmp
#   (empty line)
#
# then from another shell (the reply's fds are lost on a plain client; use recvmsg with
# scm_rights: true, as tests/loaders/rack_loaders_test.rb does, to talk to the child):
#
#   ruby -rsocket -e 's = UNIXSocket.new(ARGV[0]); b = "spawn\0secret\0"; \
#     s.write([b.bytesize].pack("n") + b); p s.read' /tmp/preloader.<hex>

require_relative 'ruby/passenger_rs'

module PassengerRackPreloader
  module_function

  def main
    PassengerRs::Handshake.prepare_stdio
    options = PassengerRs::Handshake.read_options
    app = PassengerRs::AppLoading.load_app(options, PassengerRs::AppLoading.preloader_title(options))
    exit(0) unless PassengerRs::SpawnServer.new(options).run == :forked

    # In a new child: from here on, a direct loader that happens to have the app loaded already.
    $0 = PassengerRs::AppLoading.app_title(options)
    child_options = options.merge(PassengerRs::Handshake.read_options)
    PassengerRs::Worker.run(app, child_options, forked: true)
    exit(0)
  end
end

PassengerRackPreloader.main if $PROGRAM_NAME == __FILE__
