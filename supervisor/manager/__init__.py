"""The manager backend: the scheduling state machine and the threads that feed it. May import
``core``, ``runs``, ``store`` and ``usecases.backend``."""
