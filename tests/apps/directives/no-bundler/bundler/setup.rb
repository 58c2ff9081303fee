# Put first on the load path (RUBYLIB) by tests/core_directives.rs to make Bundler look
# uninstalled.
raise LoadError, 'cannot load such file -- bundler/setup (a test stand-in for a missing Bundler)'
