# frozen_string_literal: true

module PassengerRs
  # The life of a process that serves requests, once its options are read and the app is
  # loaded: the same for the direct loader and for a child of the preloader.
  module Worker
    module_function

    # Announces the worker to the app, reports its socket and concurrency (the thread count, or
    # what the app set in PhusionPassenger.advertised_concurrency_level), serves until told to
    # stop, then says goodbye to the app and removes the socket. `forked` is true in a
    # preloader's child.
    def run(app, options, forked:)
      begin
        Events.call(:starting_worker_process, forked)
      rescue Exception => e # rubocop:disable Lint/RescueException -- reported as a start-up error
        raise if e.is_a?(SystemExit) || e.is_a?(SignalException)

        Handshake.fail_startup('The app failed in its PhusionPassenger.on_event(:starting_worker_process) callback', e)
      end
      threads = thread_count(options)
      level = concurrency(threads)
      # A kept connection holds its thread: only when the core opens at most one connection per
      # thread (not with 0 = unlimited, or more than the threads).
      keep_alive = level.between?(1, threads)
      # One thread: up to two more connections carry the requests the core sends ahead while
      # the first is being served (SessionServer.serve_in_turn). Two rather than one: a Ruby
      # process then finds its next request waiting more often, instead of sleeping until the
      # core has sent it (0.38 sleeps per hello request instead of 0.51 at 256 connections).
      prefetch = threads == 1 && level == 1 ? 2 : 0
      handler = RequestHandler.new(app, password: options['connect_password'], base_uri: options['base_uri'],
                                        multithread: threads > 1, keep_alive: keep_alive)
      server, path = SessionServer.create(options)
      begin
        ready = -> { Handshake.report_ready("main;unix:#{path};session;#{level}", prefetch) }
        SessionServer.serve(handler, server, threads, prefetch: prefetch, on_ready: ready)
      ensure
        # Also on SIGTERM (a SignalException unwinds through here).
        stopping
        server.close unless server.closed?
        File.unlink(path) if File.exist?(path)
      end
    end

    # The handshake's thread_count: a whole number from 1 up; 1 when absent or not a number.
    def thread_count(options)
      count = Integer(options['thread_count'].to_s.strip, 10)
      count >= 1 ? count : 1
    rescue ArgumentError
      1
    end

    # What the `!> socket:` line advertises: how many requests the core may send at once
    # (0: unlimited, e.g. for an app whose hijacked connections hold no thread).
    def concurrency(threads)
      level = Events.advertised_concurrency_level
      level.is_a?(Integer) && level >= 0 ? level : threads
    end

    def stopping
      Events.call(:stopping_worker_process)
    rescue StandardError => e
      RequestHandler.log_exception('Error in a PhusionPassenger.on_event(:stopping_worker_process) callback', e)
    end
  end
end
