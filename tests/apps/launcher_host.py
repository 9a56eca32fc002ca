"""A process that owns a launcher and one run, for tests that ``kill -9`` it.

``python -m tests.apps.launcher_host KIND SCHEDULER_ID RUN_ID`` (KIND: fork or fresh)
prints one JSON line about the run, then one per record, and supervises it forever.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence

from supervisor.core.records import LogRecord
from supervisor.runs.launcher import ForkServerLauncher, FreshInterpreterLauncher, Job


def main() -> None:
    kind, scheduler_id, run_id = sys.argv[1:4]
    factory = ForkServerLauncher if kind == "fork" else FreshInterpreterLauncher
    launcher = factory("tests.apps.misbehave:cfg")
    launcher.start()
    process = launcher.spawn(Job(scheduler_id=scheduler_id, run_id=run_id, trigger="manual"))
    server = getattr(launcher, "server_pid", None)
    print(json.dumps({"pid": process.pid, "create_time": process.create_time, "server": server}))
    sys.stdout.flush()

    def sink(batch: Sequence[LogRecord]) -> None:
        for record in batch:
            print(json.dumps({"message": record.message, "fields": dict(record.fields)}))
        sys.stdout.flush()

    process.supervise(sink=sink, timeout=None, cancel=threading.Event())


if __name__ == "__main__":
    main()
