# frozen_string_literal: true

module PassengerRs
  # Loads the Rack app from its startup file (config.ru) through Rack::Builder, in the app's
  # root and environment. Any failure is reported with the handshake's error block.
  module AppLoading
    module_function

    def app_root(options)
      options['app_root'] || Dir.pwd
    end

    def environment(options)
      options['environment'] || 'production'
    end

    # The title (`$0`) of a process that serves requests.
    def app_title(options)
      "Passenger RubyApp: #{app_root(options)} (#{environment(options)})"
    end

    # The title of the preloader, which only forks the processes that serve.
    def preloader_title(options)
      "Passenger AppPreloader: #{app_root(options)} (#{environment(options)})"
    end

    # Returns the app (something that responds to `call`); exits with the error block if it
    # cannot be loaded. `title` becomes `$0` before the app's code runs.
    def load_app(options, title)
      root = app_root(options)
      Dir.chdir(root)
      env = environment(options)
      %w[RACK_ENV RAILS_ENV PASSENGER_APP_ENV].each { |k| ENV[k] ||= env }
      ENV['IN_PASSENGER'] ||= '1'
      $0 = title
      startup_file = options['startup_file'] || File.join(root, 'config.ru')
      unless File.exist?(startup_file)
        Handshake.fail_startup("The startup file #{startup_file} does not exist; create it or set passenger_startup_file")
      end
      begin
        require 'rack'
      rescue LoadError => e
        Handshake.fail_startup("Rack is not installed for #{RUBY_DESCRIPTION}; install the rack gem (or Debian's ruby-rack)", e)
      end
      begin
        result = Rack::Builder.parse_file(startup_file)
      rescue Exception => e # rubocop:disable Lint/RescueException -- any failure is reported
        Handshake.fail_startup("The app in #{root} could not be loaded from #{startup_file}", e)
      end
      # Rack 2 returns [app, options], Rack 3 returns the app.
      app = result.is_a?(Array) ? result.first : result
      Handshake.fail_startup("#{startup_file} does not define a Rack app (no `run`)") unless app.respond_to?(:call)
      app
    end
  end
end
