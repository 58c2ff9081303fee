# frozen_string_literal: true

# The Ruby code shared by rack-loader.rb (direct spawning) and rack-preloader.rb (smart spawning).
# Only the standard library and Rack: it runs inside the app's process, before the app is loaded.

require 'socket'
require 'io/nonblock'
require 'io/wait'
require 'stringio'
require 'tempfile'
require 'securerandom'
require 'tmpdir'

require_relative 'passenger_rs/handshake'
require_relative 'passenger_rs/password'
require_relative 'passenger_rs/phusion_passenger'
require_relative 'passenger_rs/app_loading'
require_relative 'passenger_rs/rack_env'
require_relative 'passenger_rs/request_handler'
require_relative 'passenger_rs/session_server'
require_relative 'passenger_rs/worker'
require_relative 'passenger_rs/message_channel'
require_relative 'passenger_rs/spawn_server'
