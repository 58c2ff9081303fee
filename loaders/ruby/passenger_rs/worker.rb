# frozen_string_literal: true

module PassengerRs
  # The life of a process that serves requests, once its options are read and the app is
  # loaded: the same for the direct loader and for a child of the preloader.
  module Worker
    module_function

    # Announces the worker to the app, reports its socket, serves until told to stop, then
    # says goodbye to the app and removes the socket. `forked` is true in a preloader's child.
    def run(app, options, forked:)
      begin
        Events.call(:starting_worker_process, forked)
      rescue Exception => e # rubocop:disable Lint/RescueException -- reported as a start-up error
        raise if e.is_a?(SystemExit) || e.is_a?(SignalException)

        Handshake.fail_startup('The app failed in its PhusionPassenger.on_event(:starting_worker_process) callback', e)
      end
      server, path = SessionServer.create(options)
      begin
        Handshake.report_ready("main;unix:#{path};session;1")
        SessionServer.serve(app, server, options['connect_password'].to_s)
      ensure
        # Also on SIGTERM (a SignalException unwinds through here).
        stopping
        server.close unless server.closed?
        File.unlink(path) if File.exist?(path)
      end
    end

    def stopping
      Events.call(:stopping_worker_process)
    rescue StandardError => e
      RequestHandler.log_exception('Error in a PhusionPassenger.on_event(:stopping_worker_process) callback', e)
    end
  end
end
