# Test app: fails while loading, as a Rack app with a bug in its boot code would.
raise ArgumentError, 'boom: this app is broken on purpose'
