"""``python -m supervisor``: the same as the ``supervisor`` command."""

from supervisor.cli.main import main

main()
