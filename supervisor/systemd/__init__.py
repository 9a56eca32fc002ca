"""systemd mode: unit rendering, cron as OnCalendar, installation, one foreground execution,
journald, and the backend over systemctl/journalctl. May import ``core``, ``runs``, ``store``
and ``usecases.backend``."""
