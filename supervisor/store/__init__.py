"""Persistence: settings overrides, runs, logs, audit and users. May import ``core``."""
