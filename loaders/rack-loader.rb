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
#   core:    ...                    socket_dir, base_uri, thread_count, ...)
#   core:    (empty line)
#   loader:  !> Ready
#   loader:  !> socket: main;unix:<path>;session;<thread_count>
#   loader:  !> prefetch: 2        (with one thread: see below)
#   loader:  !>                    (with a trailing space)
#
# When the app root has a Gemfile (or gems.rb, or BUNDLE_GEMFILE is set), the bundle is set up
# (as `require 'bundler/setup'` does) before Rack and config.ru are loaded; with the handshake's
# `preload_bundler: true` (passenger_preload_bundler on) `bundler/setup` is required anyway. If the app cannot be
# loaded it prints `!> Error`, `!> html: false` and the reason with the exception, and exits 1.
#
# Once ready, `thread_count` threads (1 when absent) serve the session protocol on its unix
# socket, each one connection and one request at a time: a 4-byte big-endian length,
# NUL-separated KEY/VALUE pairs (the CGI environment and the connect password), then
# CONTENT_LENGTH bytes of body; the answer is an HTTP/1.1 response. The connection then carries
# the next request if the response was delimited (no body, or exactly its one Content-Length),
# else it is closed, its head saying `Connection: close` when that was known in time (the
# core's keep-alive contract; see ruby/passenger_rs/request_handler.rb). With one thread it
# takes up to two more connections while busy (`prefetch: 2`): the core sends requests ahead on
# them, which the thread serves in turn as soon as it has answered the one before (see
# ruby/passenger_rs/session_server.rb).
# The Rack env is built to the letter of the Rack SPEC (2 and 3), SCRIPT_NAME being the
# handshake's `base_uri` (see ruby/passenger_rs/rack_env.rb and request_handler.rb). A response
# header `!~Request-OOB-Work: true` is passed on to the core, which later sends a pseudo-request
# with REQUEST_METHOD `OOBW`: it runs the PhusionPassenger.on_event(:oob_work) callbacks and is
# answered `HTTP/1.1 200 OK` with `Content-Length: 0`.
# A byte or EOF on stdin (the core is gone or wants it to stop) makes it stop accepting, finish
# the requests in progress, and exit.
#
# The `PhusionPassenger` module (on_event, advertised_concurrency_level) is defined before the
# app is loaded, unless something defined it already; :starting_worker_process is called with
# forked = false right before serving, :stopping_worker_process when it stops, :oob_work on
# OOBW. The code lives in ruby/passenger_rs/, shared with rack-preloader.rb (smart spawning).
#
# It can be driven by hand: run it, type `You have control 1.0`, then e.g.
# `app_root: /srv/app`, `connect_password: x`, `socket_dir: /tmp`, and an empty line; then
# talk to the socket with e.g.
#
#   ruby -rsocket -e 'h = "REQUEST_METHOD\0GET\0REQUEST_URI\0/\0PASSENGER_CONNECT_PASSWORD\0x\0"; \
#     s = UNIXSocket.new(ARGV[0]); s.write([h.bytesize].pack("N") + h); print s.read' /tmp/ruby.<hex>

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
