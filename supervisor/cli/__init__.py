"""The ``supervisor`` command: click commands on top of the use cases, the control client and
the systemd mode. The edge where errors become exit codes."""
