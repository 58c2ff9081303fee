# frozen_string_literal: true

# A minimal `PhusionPassenger` module: Rails apps and gems test `defined?(PhusionPassenger)` and
# register fork hooks with `PhusionPassenger.on_event(:starting_worker_process) { |forked| }`
# (e.g. to reopen database connections after a smart-spawn fork). Defined only when nothing
# (say, the passenger gem through RUBYOPT) has defined it already; this file is required before
# the app is loaded.
unless defined?(PhusionPassenger)
  module PhusionPassenger
    @event_callbacks = Hash.new { |hash, name| hash[name] = [] }

    class << self
      # Registers a block to call on an event: :starting_worker_process (argument: forked, true
      # in a process forked by the preloader) or :stopping_worker_process.
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
  end
end
