# frozen_string_literal: true

# A minimal `PhusionPassenger` module, compatible with the parts of Phusion Passenger's that apps
# and gems use: they test `defined?(PhusionPassenger)` and register callbacks with
# `PhusionPassenger.on_event(name) { |*args| ... }`:
#
#   :starting_worker_process  (forked)  before the process serves; forked is true in a process
#                                       forked by the preloader (smart spawning), where database
#                                       connections and the like must be reopened
#   :stopping_worker_process  ()        when the process stops
#   :oob_work                 ()        out-of-band work: after a response that carried the
#                                       header `!~Request-OOB-Work: true`, once the process has
#                                       been taken out of request routing
#
# and some set `PhusionPassenger.advertised_concurrency_level` (e.g. 0 for apps whose hijacked
# connections do not hold a thread) before the process reports ready.
#
# Defined only when nothing (say, the passenger gem through RUBYOPT) has defined it already;
# this file is required before the app is loaded.
unless defined?(PhusionPassenger)
  module PhusionPassenger
    @event_callbacks = Hash.new { |hash, name| hash[name] = [] }
    @advertised_concurrency_level = nil

    class << self
      # How many requests the process tells the core it can serve at once; nil: the thread count.
      attr_accessor :advertised_concurrency_level

      # Registers a block to call on an event (see above).
      def on_event(name, &block)
        raise ArgumentError, 'PhusionPassenger.on_event needs a block' unless block

        @event_callbacks[name.to_sym] << block
        nil
      end

      # Calls the blocks registered for the event, in registration order.
      def call_event(name, *args)
        return unless @event_callbacks.key?(name.to_sym)

        @event_callbacks[name.to_sym].each { |callback| callback.call(*args) }
        nil
      end
    end
  end
end

module PassengerRs
  # The loaders' side of the events: they go through `PhusionPassenger.call_event`, whoever
  # defined the module, so that callbacks registered with a different implementation run too.
  module Events
    module_function

    def call(name, *args)
      return unless defined?(PhusionPassenger) && PhusionPassenger.respond_to?(:call_event)

      PhusionPassenger.call_event(name, *args)
    end

    def advertised_concurrency_level
      return nil unless defined?(PhusionPassenger) && PhusionPassenger.respond_to?(:advertised_concurrency_level)

      PhusionPassenger.advertised_concurrency_level
    end
  end
end
