"""Write the sched-supervisor(1) manual page (roff) to stdout.

The COMMANDS section comes from the click commands of ``supervisor.cli.main`` (their help texts
and options), so the page never drifts from ``supervisor --help``; the other sections say
how the Debian package is meant to be used: how to point it at an application, the
service, its configuration file, and the state directory. Run at package build time by
``packaging/debian/rules``. The EXIT STATUS section comes from the error types of
``supervisor.core.errors`` (each carries its exit status). May import click, the
standard library, ``supervisor.cli.main`` and ``supervisor.core.errors``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator

import click

PAGE_HEAD = r"""
.SH NAME
sched-supervisor, supervisor \- run background jobs defined in Python,
crash\-isolated, and control them
.SH SYNOPSIS
.B supervisor run \-\-app
.I MODULE:ATTRIBUTE
.RB [ \-\-state\-dir
.IR DIR ]
.RB [ \-\-admin
.IR HOST:PORT " | " \-\-no\-admin ]
.br
.B supervisor
.I COMMAND
.RI [ OPTIONS ]
.RI [ ARGUMENTS ]
.br
.B systemctl start sched\-supervisor
.SH DESCRIPTION
.B supervisor
runs background processes ("schedulers") that an application defines in Python code:
one-shot, repeating, manual and cron-scheduled jobs.
Each run is a child process in its own process group, so a crash, abort or out-of-memory
kill of a run never takes the manager down.
Runs, their log records and output, settings and the audit trail are stored in SQLite in
the state directory.
Operators control the schedulers from the Admin Center (a web page, on loopback by
default), from the commands below, or from systemd.
.PP
This command is not supervisord(1): Debian's
.B supervisor
package (supervisord, supervisorctl) is a different program and can be installed beside
this one. The modules of sched-supervisor live in
.IR /usr/share/sched\-supervisor ,
and
.B /usr/bin/supervisor
runs them with Debian's
.B /usr/bin/python3
in isolated mode.
.SH POINTING IT AT AN APPLICATION
An application is a Python module with a
.B supervisor.Configurator
in it, named as
.IR MODULE:ATTRIBUTE ,
for example
.BR examples.jobs:cfg .
The module is imported from the current directory, then from the directories listed in
.B SUPERVISOR_APP_PATH
(separated by colons).
.B PYTHONPATH
is ignored, as are the user's site-packages; the processes that start runs get
.B PYTHONPATH
set to
.BR SUPERVISOR_APP_PATH .
To try the examples shipped with the package:
.PP
.nf
.RS
SUPERVISOR_APP_PATH=/usr/share/sched\-supervisor/demo \e
    supervisor run \-\-app examples.jobs:cfg \-\-state\-dir ~/sched\-demo
.RE
.fi
.PP
An application that needs libraries of its own can list a virtual environment's
.I site\-packages
directory in
.BR SUPERVISOR_APP_PATH .
.SH THE SERVICE
.B sched\-supervisor.service
runs
.B supervisor run
as the system user
.B sched\-supervisor
with the state directory
.IR /var/lib/sched\-supervisor .
It reads
.I /etc/sched\-supervisor/sched\-supervisor.conf
(KEY=value lines):
.TP
.B SUPERVISOR_APP
The application, as
.IR MODULE:ATTRIBUTE .
While it is empty the service does not start (its condition is not met).
.TP
.B SUPERVISOR_APP_PATH
Directories the application is imported from; they must be readable by the user
.B sched\-supervisor
and lie outside
.IR /home ,
.I /root
and
.I /tmp
(the service's sandbox hides them).
.TP
.B SUPERVISOR_ADMIN
The Admin Center's address,
.I HOST:PORT
(default 127.0.0.1:8080).
.TP
.B SUPERVISOR_OPTIONS
More options for
.BR "supervisor run" ,
for example
.BR \-\-no\-admin .
.PP
After editing the file:
.BR "systemctl restart sched\-supervisor" .
As root, the commands below find this service's state directory without
.BR \-\-state\-dir .
.PP
The service runs sandboxed (systemd\-analyze security rates it "OK"): no capabilities,
a read-only system except its state directory, no home directories, a private
.IR /tmp ,
no writable-executable memory, and only the system calls of ordinary services; its
runs inherit that. It keeps a delegated cgroup
.RB ( Delegate=yes )
so that each run can get a cgroup of its own. To let runs write elsewhere, or to loosen a
setting, add a drop-in with
.BR "systemctl edit sched\-supervisor" ,
for example
.B ReadWritePaths=/srv/reports
or
.BR ProtectHome=read\-only .
The manager's own messages go to the journal:
.BR "journalctl \-u sched\-supervisor" .
""".strip()

PAGE_TAIL = r"""
.SH READING WITHOUT A MANAGER
When no manager runs for the state directory,
.BR list ", " status ", " runs " and " logs
read its database instead, read-only (nothing is written or created there), and say so
on standard error. The other commands need the manager.
.SH SHELL COMPLETION
Commands, options and scheduler IDs complete in bash, zsh and fish, for example in
.IR ~/.bashrc :
.PP
.nf
.RS
eval "$(_SUPERVISOR_COMPLETE=bash_source supervisor)"
.RE
.fi
.PP
(\fBzsh_source\fR and \fBfish_source\fR for the others).
.SH ENVIRONMENT
.TP
.B NO_COLOR
When set (and not empty), no colours; they are shown only on a terminal anyway.
.TP
.B SUPERVISOR_STATE_DIR
The state directory when
.B \-\-state\-dir
is not given. Otherwise it is
.I /var/lib/sched\-supervisor
for root and
.I ~/.local/state/sched\-supervisor
for other users. The systemd mode's commands
.RB ( install\-units ", " uninstall\-units )
use
.I /var/lib/sched\-supervisor\-units
(or
.IR ~/.local/state/sched\-supervisor\-units )
instead, so that units installed by root never share the service's directory; the
other commands find that directory when units are installed there and no manager runs on
the default one, or when
.B SUPERVISOR_BACKEND=systemd
is set.
.TP
.B SUPERVISOR_APP_PATH
Directories to import the application from (see above).
.SH FILES
.TP
.I /etc/sched\-supervisor/sched\-supervisor.conf
The service's configuration (a conffile).
.TP
.I /var/lib/sched\-supervisor
The service's state: a SQLite database of settings, runs, logs, users and the audit trail.
Kept when the package is removed, deleted when it is purged.
.TP
.I /var/lib/sched\-supervisor\-units
The state of units installed by
.B supervisor install\-units
as root (their install manifest, settings and users); not the package's.
.TP
.I /usr/share/sched\-supervisor
The program's modules, and its private copy of croniter.
.TP
.I /usr/share/sched\-supervisor/demo/examples
The example application
.RB ( examples.jobs:cfg ),
also linked as
.IR /usr/share/doc/sched\-supervisor/examples .
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR systemd.service (5),
.BR crontab (5),
.BR supervisord (1)
(a different program)
""".strip()


def roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens, and control characters at line start."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in escaped.splitlines():
        stripped = line.lstrip()
        lines.append("\\&" + stripped if stripped.startswith((".", "'")) else stripped)
    return "\n".join(lines)


def paragraphs(text: str) -> str:
    """Click help text (paragraphs separated by blank lines) as roff paragraphs."""
    blocks = [" ".join(block.split()) for block in text.split("\n\n") if block.strip()]
    return "\n.PP\n".join(roff(block) for block in blocks)


def walk(
    command: click.Command, ctx: click.Context, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    """Every leaf command below ``command``, with its name path and context, sorted."""
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = click.Context(sub, info_name=name, parent=ctx)
            yield from walk(sub, sub_ctx, (*path, name))
    else:
        yield path, command, ctx


def command_section(root: click.Command) -> str:
    root_ctx = click.Context(root, info_name="supervisor")
    out = [".SH COMMANDS"]
    for path, command, ctx in walk(root, root_ctx, ()):
        usage = " ".join(command.collect_usage_pieces(ctx))
        out.append(f".SS {roff(' '.join(path))}")
        out.append(f"\\fBsupervisor {roff(' '.join(path))}\\fR {roff(usage)}")
        out.append(".PP")
        out.append(paragraphs(command.help or command.get_short_help_str()))
        for param in command.get_params(ctx):
            if not isinstance(param, click.Option) or "--help" in param.opts:
                continue
            record = param.get_help_record(ctx)
            if record is None:
                continue
            names, help_text = record
            out.append(".TP")
            out.append(f".B {roff(names)}")
            out.append(roff(" ".join(help_text.split())) or ".")
    return "\n".join(out)


# What each exit status tells an operator; every status an error type of
# ``supervisor.core.errors`` carries must be here (``exit_codes`` checks).
EXIT_MEANINGS = {
    0: "Success.",
    1: "Any other error, or the command was interrupted.",
    2: "Wrong usage: an unknown option, a missing argument, or an invalid value (a bad"
    " duration, cron expression, time zone or setting, a --store that is no postgresql://"
    " URL, an unknown user name, the last admin to remove, disable or demote; the message"
    " names it).",
    3: "No such scheduler (the message suggests IDs that look alike), custom action or run.",
    4: "Refused: a run of the scheduler is in progress (the message names it).",
    5: "Permission denied to the user for this action.",
    6: "The application given with --app (or recorded in the state directory) cannot be imported.",
    7: "The state database (or the --store PostgreSQL database) cannot be used: missing,"
    " unreachable, corrupt, of another program, of a newer version, or not writable.",
    8: "No manager is running for the state directory (and, for a read command, it holds"
    " no state database to read), or it does not answer.",
    9: "The backend (the manager, or systemd) failed to carry out the command.",
    10: "A custom action raised an error (the message is its error).",
    11: "Refused to use a file or directory that someone else could have changed (another"
    " owner, group- or world-writable, a symlink).",
    12: "A notification could not be delivered.",
    13: "Another host has taken the scheduler over (a stale lease).",
}


def exit_codes() -> dict[int, str]:
    """Each exit status and what it means; ``ValueError`` if an error type of
    ``supervisor.core.errors`` carries a status the page does not explain."""
    from supervisor.core import errors

    pending = list(errors.SupervisorError.__subclasses__())
    codes = {errors.SupervisorError.exit_code}
    while pending:
        kind = pending.pop(0)
        pending.extend(kind.__subclasses__())
        if kind.__module__ == errors.__name__:
            codes.add(kind.exit_code)
    missing = sorted(codes - set(EXIT_MEANINGS))
    if missing:
        raise ValueError(f"exit status {missing[0]} is not explained in EXIT_MEANINGS")
    return dict(sorted(EXIT_MEANINGS.items()))


def exit_section() -> str:
    out = [
        ".SH EXIT STATUS",
        "A command that fails prints one line starting with",
        '.B "error:"',
        "on standard error and exits with one of these statuses",
        "(\\fBsupervisor exec\\fR exits with its run's status instead, see above):",
    ]
    for code, meaning in exit_codes().items():
        out.append(".TP")
        out.append(f".B {code}")
        out.append(roff(meaning))
    return "\n".join(out)


def render(root: click.Command, *, version: str, date: str) -> str:
    header = f'.TH SCHED-SUPERVISOR 1 "{date}" "sched-supervisor {version}" "User Commands"'
    environment_and_files, see_also = PAGE_TAIL.split(".SH SEE ALSO")
    sections = [header, PAGE_HEAD, command_section(root), environment_and_files.rstrip()]
    sections += [exit_section(), ".SH SEE ALSO" + see_also]
    return "\n".join(sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", required=True, help="the package's upstream version")
    args = parser.parse_args()
    from supervisor.cli.main import main as root

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    sys.stdout.write(render(root, version=args.version, date=date))


if __name__ == "__main__":
    main()
