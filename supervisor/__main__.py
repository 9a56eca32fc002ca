"""``python -m supervisor``: the same as the ``supervisor`` command."""

from supervisor.cli import main

main()
