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
# The `PhusionPassenger` module (on_event) is defined before the app is loaded, unless something
# defined it already; :starting_worker_process is called with forked = false right before
# serving, :stopping_worker_process when it stops. The code lives in ruby/passenger_rs/, shared
# with rack-preloader.rb (smart spawning).
#
# It can be driven by hand: run it, type `You have control 1.0`, then e.g.
# `app_root: /srv/app`, `connect_password: x`, `socket_dir: /tmp`, and an empty line.

require_relative 'ruby/passenger_rs'

module PassengerRackLoader
  module_function

  def main
    PassengerRs::Handshake.prepare_stdio
    options = PassengerRs::Handshake.read_options
    app = PassengerRs::AppLoading.load_app(options, PassengerRs::AppLoading.app_title(options))
    PassengerRs::Worker.run(app, options, forked: false)
    exit(0)
  end
end

PassengerRackLoader.main if $PROGRAM_NAME == __FILE__
