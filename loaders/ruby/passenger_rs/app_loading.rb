# frozen_string_literal: true

module PassengerRs
  # Loads the Rack app from its startup file (config.ru) through Rack::Builder, in the app's
  # root and environment, after setting up the app's Bundler bundle if it has one (a Gemfile or
  # gems.rb in the app root, or BUNDLE_GEMFILE set), so that the bundle's Rack and gems are the
  # ones loaded; with the handshake's `preload_bundler: true` (passenger_preload_bundler on),
  # `bundler/setup` is required in any case. Any failure is reported with the handshake's
  # error block.
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
      bundled = setup_bundler(root)
      preload_bundler unless bundled || options['preload_bundler'] != 'true'
      begin
        require 'rack'
      rescue LoadError => e
        if bundled
          Handshake.fail_startup("Rack cannot be loaded with the app's bundle (#{ENV['BUNDLE_GEMFILE']}); add `gem 'rack'` to the Gemfile and run `bundle install` in #{root}", e)
        end
        Handshake.fail_startup("Rack is not installed for #{RUBY_DESCRIPTION}; install the rack gem (or Debian's ruby-rack)", e)
      end
      # The loader needs Rack::Utils (status reason phrases); loading it also loads `uri`, which
      # Rack::Lint uses without requiring it. Both come after Bundler, so that the bundle's
      # versions are the ones loaded.
      require 'rack/utils'
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

    # passenger_preload_bundler: requires bundler/setup (which sets up a bundle if one is found
    # from the current directory, and loads Bundler in any case) before the app is loaded.
    def preload_bundler
      stdout = $stdout
      begin
        $stdout = $stderr
        require 'bundler/setup'
      ensure
        $stdout = stdout
      end
    rescue LoadError => e
      Handshake.fail_startup("passenger_preload_bundler is on but Bundler cannot be loaded for #{RUBY_DESCRIPTION}; install bundler (Debian: ruby-bundler), or turn passenger_preload_bundler off", e)
    rescue StandardError, ScriptError => e
      Handshake.fail_startup("passenger_preload_bundler is on but requiring bundler/setup failed", e)
    end

    # The Gemfile of the app's bundle, if it has one: BUNDLE_GEMFILE, else the app root's
    # Gemfile or gems.rb.
    def gemfile(root)
      given = ENV['BUNDLE_GEMFILE']
      return given unless given.nil? || given.empty?

      %w[Gemfile gems.rb].map { |name| File.join(root, name) }.find { |path| File.file?(path) }
    end

    # Sets up the bundle (as `require 'bundler/setup'` does) when the app has a Gemfile;
    # returns whether it did. Bundler's own messages go to stderr, stdout being the handshake.
    def setup_bundler(root)
      path = gemfile(root)
      return false unless path

      ENV['BUNDLE_GEMFILE'] = File.expand_path(path, root)
      stdout = $stdout
      begin
        $stdout = $stderr
        require 'bundler'
        # What bundler/setup does, minus its terminal-only branch that prints and exits:
        # here every failure must reach the error block.
        Bundler.setup
        require 'bundler/setup' # already set up: a no-op, for apps that check it was loaded
      ensure
        $stdout = stdout
      end
      true
    rescue LoadError => e
      Handshake.fail_startup("The app has a Gemfile (#{ENV['BUNDLE_GEMFILE']}) but Bundler cannot be loaded for #{RUBY_DESCRIPTION}; install bundler (Debian: ruby-bundler), or remove the Gemfile", e)
    rescue StandardError, ScriptError => e
      missing = e.class.name.to_s.include?('GemNotFound') ? ' (run `bundle install` in the app root to install the missing gems)' : ''
      Handshake.fail_startup("The app's gems could not be set up with Bundler from #{ENV['BUNDLE_GEMFILE']}#{missing}", e)
    end
  end
end
