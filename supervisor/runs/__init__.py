"""What runs a run: the run context and wire format used inside a run's process, the child
entry point, the fork server, the launcher and process-group handling. May import ``core``."""
