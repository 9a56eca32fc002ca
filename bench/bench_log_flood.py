"""One run printing 1,000,000 lines: records per second into SQLite, none lost, memory bounded.

The run prints N numbered lines to stdout; the figure is N / (time from run start until
every record is stored), and the stored count must equal N. The manager's peak RSS is
sampled during the run. Baseline in the same run: the same child writing its lines into
a pipe read by ``cat > /dev/null`` (the cost of producing the lines alone).
Target: >= 100,000 records/s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time

import psutil
from common import start_service, temp_dir, write_app

from supervisor.core.access import su

APP = """
def flood(ctx):
    out = sys.stdout
    for i in range({lines}):
        out.write(f"line {{i}} of the flood\\n")
    out.flush()

add(id="bench.flood", name="flood", kind=scheduler.Kind.MANUAL, runner=flood)
"""


def baseline(lines: int) -> float:
    code = (
        "import sys\nout=sys.stdout\n"
        f"for i in range({lines}):\n    out.write(f'line {{i}} of the flood\\n')\nout.flush()"
    )
    started = time.monotonic()
    producer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    subprocess.run(["cat"], stdin=producer.stdout, stdout=subprocess.DEVNULL, check=True)
    producer.wait()
    return lines / (time.monotonic() - started)


def measure(lines: int) -> tuple[float, int, float]:
    work = temp_dir("bench-flood-")
    try:
        spec = write_app(work / "app", "flood_app", APP.format(lines=lines))
        service = start_service(spec, work / "state", max_log_bytes_per_run=1 << 40)
        me = psutil.Process()
        peak = me.memory_info().rss
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, me.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert service.manager is not None and service.store is not None
        try:
            started = time.monotonic()
            run_id = service.use_cases.execute(su(), "bench.flood")
            service.manager.wait_idle("bench.flood", 600)
            elapsed = time.monotonic() - started
            stored = service.store.count_logs(run_id)
        finally:
            done.set()
            sampler.join()
            service.close()
        stdout_records = stored  # the run writes nothing else
        return stdout_records / elapsed, stored, peak / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    floor = baseline(args.lines)
    rate, stored, peak = measure(args.lines)
    print(f"one run printing {args.lines:,} lines")
    print(f"{'baseline: pipe into cat':<34} {floor:12,.0f} lines/s")
    print(
        f"{'supervisor: into SQLite':<34} {rate:12,.0f} records/s  stored={stored:,}  "
        f"lost={args.lines - stored:,}  manager peak rss={peak:.1f} MB"
    )
    print("target: >= 100,000 records/s, none lost")


if __name__ == "__main__":
    main()
