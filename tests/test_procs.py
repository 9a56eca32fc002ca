"""A run's process plumbing that the fork server's children use: resetting signal
dispositions from a plan, and writing the run marker in place. Each in a fresh
interpreter (these change process-wide state)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from supervisor.runs import procs

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run ``code``; return the JSON object its last stdout line holds."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_a_forked_child_gets_fresh_dispositions_from_the_plan() -> None:
    answer = run_python(
        """
        import json, os, signal
        from supervisor.runs import procs
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        plan = procs.signal_resets()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            procs.reset_signal_dispositions(plan)
            seen = {
                name: repr(signal.getsignal(getattr(signal, name)))
                for name in ("SIGTERM", "SIGHUP", "SIGINT", "SIGPIPE")
            }
            seen["mask"] = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
            os.write(w, json.dumps(seen).encode())
            os._exit(0)
        os.close(w)
        child = json.loads(os.read(r, 4096))
        os.waitpid(pid, 0)
        kinds = sorted({type(wanted).__name__ for _, wanted in plan})
        print(json.dumps({"child": child, "kinds": kinds}))
        """
    )
    assert answer["child"] == {
        "SIGTERM": "<Handlers.SIG_DFL: 0>",
        "SIGHUP": "<Handlers.SIG_DFL: 0>",
        "SIGINT": "<built-in function default_int_handler>",
        "SIGPIPE": "<Handlers.SIG_IGN: 1>",
        "mask": [],
    }
    # SIG_DFL/SIG_IGN as plain ints (what the C function takes), handlers as they are.
    assert answer["kinds"] == ["builtin_function_or_method", "int"]


def test_regression_resetting_a_python_handler_makes_no_enum_lookup() -> None:
    # Before: signal.signal() turned each replaced Python handler into a Handlers member,
    # a lookup that fails and formats a ValueError: some 80 page copies in a forked run.
    answer = run_python(
        """
        import json, signal
        from supervisor.runs import procs
        lookups = []
        original = signal._int_to_enum
        def counting(value, enum_klass):
            lookups.append(repr(value))
            return original(value, enum_klass)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        plan = procs.signal_resets()
        signal._int_to_enum = counting
        procs.reset_signal_dispositions(plan)
        procs.reset_signal_dispositions([(signal.SIGUSR2, signal.SIG_IGN)])  # a member
        signal._int_to_enum = original
        print(json.dumps({
            "lookups": lookups,
            "term": repr(signal.getsignal(signal.SIGTERM)),
            "usr2": repr(signal.getsignal(signal.SIGUSR2)),
        }))
        """
    )
    assert answer == {
        "lookups": [],
        "term": "<Handlers.SIG_DFL: 0>",
        "usr2": "<Handlers.SIG_IGN: 1>",
    }


def test_the_marker_is_written_in_place_in_a_forked_child() -> None:
    env = {**os.environ, procs.MARKER_ENV: procs.MARKER_PLACEHOLDER}
    answer = run_python(
        """
        import json, os
        from supervisor.runs import procs
        slot = procs.marker_slot()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            marked = procs.mark_this_process("run-one", slot)
            seen = {
                "marked": marked,
                "proc": procs.read_marker(os.getpid()),
                "environ": os.environ[procs.MARKER_ENV],
                "getenv": os.popen("printf %s \\"$SUPERVISOR_RUN_ID\\"").read(),
            }
            os.write(w, json.dumps(seen).encode())
            os._exit(0)
        os.close(w)
        child = json.loads(os.read(r, 4096))
        os.waitpid(pid, 0)
        print(json.dumps({"child": child, "parent": procs.read_marker(os.getpid())}))
        """,
        env=env,
    )
    assert answer["child"] == {
        "marked": True,
        "proc": "run-one",
        "environ": "run-one",
        "getenv": "run-one",
    }
    assert answer["parent"] == procs.MARKER_PLACEHOLDER  # the parent's is its own


def test_a_run_id_longer_than_the_slot_is_carried_in_the_environment_only() -> None:
    env = {**os.environ, procs.MARKER_ENV: "_" * 8}
    answer = run_python(
        """
        import json, os
        from supervisor.runs import procs
        slot = procs.marker_slot()
        marked = procs.mark_this_process("a-run-id-too-long", slot)
        print(json.dumps({
            "room": slot.room,
            "marked": marked,
            "proc": procs.read_marker(os.getpid()),
            "environ": os.environ[procs.MARKER_ENV],
        }))
        """,
        env=env,
    )
    assert answer == {
        "room": 8,
        "marked": False,
        "proc": "_" * 8,
        "environ": "a-run-id-too-long",
    }


def test_create_time_without_psutil_matches_psutils() -> None:
    # The fork server computes it from /proc/stat's btime (it does not import psutil);
    # the manager compares it with psutil's when it cleans up after a dead manager.
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ours = procs.create_time(process.pid)
        assert abs(ours - psutil.Process(process.pid).create_time()) < 0.01
    finally:
        process.kill()
        process.wait()


def test_a_forked_run_is_marked_without_putenv_where_the_c_environment_shows_the_slot() -> None:
    # ``os.environ[...] =`` (its encoding and ``putenv``) cost a run some 30 page copies:
    # where the C library's entry is the slot, only Python's copy is updated.
    env = {**os.environ, procs.MARKER_ENV: procs.MARKER_PLACEHOLDER}
    answer = run_python(
        """
        import ctypes, json, os, subprocess
        from supervisor.runs import procs
        slot = procs.marker_slot()
        calls = []
        os.putenv = lambda *args: calls.append(args)
        procs.mark_this_process("run-two", slot)
        getenv = ctypes.CDLL(None).getenv
        getenv.restype = ctypes.c_char_p
        print(json.dumps({
            "c_environ": slot.c_environ,
            "putenv": calls,
            "environ": os.environ[procs.MARKER_ENV],
            "copied": dict(os.environ)[procs.MARKER_ENV],
            "getenv": getenv(b"SUPERVISOR_RUN_ID").decode(),
            "program": subprocess.run(
                ["sh", "-c", "printf %s \\"$SUPERVISOR_RUN_ID\\""], capture_output=True
            ).stdout.decode(),
            "proc": procs.read_marker(os.getpid()),
        }))
        """,
        env=env,
    )
    assert answer == {
        "c_environ": True,
        "putenv": [],
        "environ": "run-two",
        "copied": "run-two",
        "getenv": "run-two",
        "program": "run-two",
        "proc": "run-two",
    }


def test_a_marker_set_again_before_the_slot_was_found_goes_through_putenv() -> None:
    # Once ``setenv`` replaced the C entry, the slot is only /proc's: ``putenv`` is used.
    env = {**os.environ, procs.MARKER_ENV: procs.MARKER_PLACEHOLDER}
    answer = run_python(
        """
        import json, os
        from supervisor.runs import procs
        os.environ[procs.MARKER_ENV] = "set-again"
        slot = procs.marker_slot()
        procs.mark_this_process("run-three", slot)
        print(json.dumps({
            "c_environ": slot.c_environ,
            "program": os.popen("printf %s \\"$SUPERVISOR_RUN_ID\\"").read(),
            "proc": procs.read_marker(os.getpid()),
        }))
        """,
        env=env,
    )
    assert answer == {"c_environ": False, "program": "run-three", "proc": "run-three"}
