"""A run's output, captured: the records pipe and stdout/stderr into ``LogRecord`` batches.

Each stdout line becomes an INFO record, each stderr line a WARNING record (stderr
carries diagnostics and progress as well as errors; tracebacks of failed runs arrive as
ERROR records on the records pipe). Bytes are decoded as UTF-8 with
``errors="replace"``; a line longer than ``MAX_OUTPUT_LINE`` bytes is split into records
of that size (fields ``{"partial": true}``), so memory stays bounded. The records pipe
carries ``wire`` lines: log records, the runner's result and the exec notice.

``Capture`` owns the three readers and the batch: the supervision loop hands it what it
read, and it delivers batches of at most ``BATCH_RECORDS`` to the sink, at least every
``BATCH_SECONDS`` while output flows, and at once when output pauses.

May import ``records``, ``wire``, ``context`` and the stdlib.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from supervisor.core.records import Level, LogRecord, Source
from supervisor.runs.context import NO_FIELDS
from supervisor.runs.exits import STDERR_TAIL_LINES, StderrTail
from supervisor.runs.wire import MAX_LINE_BYTES, ExecNotice, RunResult, decode, problem_record

Sink = Callable[[Sequence[LogRecord]], None]

BATCH_RECORDS: Final = 1000
BATCH_SECONDS: Final = 0.02
READ_SIZE: Final = 64 * 1024  # a pipe's default capacity
MAX_OUTPUT_LINE: Final = 32 * 1024
_PARTIAL: Final[Mapping[str, object]] = MappingProxyType({"partial": True})


class OutputReader:
    """Splits one output stream into line records, never holding more than one line."""

    def __init__(self, run_id: str, source: Source, level: Level, tail: int = 0) -> None:
        self.run_id = run_id
        self.source = source
        self.level = level
        self.partial = b""
        # Our own frames of a fault's stack dump are left out as they come (``exits``).
        self.tail: StderrTail | None = StderrTail(tail) if tail else None

    def feed(self, data: bytes, now: datetime, out: list[LogRecord]) -> None:
        if self.partial:
            data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if len(data) > MAX_OUTPUT_LINE and max(map(len, lines), default=0) > MAX_OUTPUT_LINE:
            for line in lines:
                while len(line) > MAX_OUTPUT_LINE:
                    self._record(line[:MAX_OUTPUT_LINE], now, out, _PARTIAL)
                    line = line[MAX_OUTPUT_LINE:]
                self._record(line, now, out, NO_FIELDS)
        else:
            run_id, level, source = self.run_id, self.level, self.source
            texts = [line.decode("utf-8", "replace") for line in lines]
            out.extend(
                [
                    LogRecord(
                        time=now,
                        level=level,
                        message=text,
                        fields=NO_FIELDS,
                        run_id=run_id,
                        source=source,
                    )
                    for text in texts
                ]
            )
            if self.tail is not None:
                self.tail.extend(texts)
        while len(self.partial) > MAX_OUTPUT_LINE:
            self._record(self.partial[:MAX_OUTPUT_LINE], now, out, _PARTIAL)
            self.partial = self.partial[MAX_OUTPUT_LINE:]

    def close(self, now: datetime, out: list[LogRecord]) -> None:
        if self.partial:
            self._record(self.partial, now, out, NO_FIELDS)
            self.partial = b""

    def _record(
        self, piece: bytes, now: datetime, out: list[LogRecord], fields: Mapping[str, object]
    ) -> None:
        text = piece.decode("utf-8", "replace")
        out.append(
            LogRecord(
                time=now,
                level=self.level,
                message=text,
                fields=fields,
                run_id=self.run_id,
                source=self.source,
            )
        )
        if self.tail is not None:
            self.tail.append(text[:500])


class RecordsReader:
    """Decodes the records pipe; remembers the result and the exec notice."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.partial = b""
        self.skipping = False
        self.result: RunResult | None = None
        self.exec: ExecNotice | None = None

    def feed(self, data: bytes, now: datetime, out: list[LogRecord]) -> None:
        if self.partial:
            data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if self.skipping and lines:
            lines.pop(0)  # the end of an over-long line
            self.skipping = False
        run_id = self.run_id
        for line in lines:
            if not line:
                continue
            message = decode(line, run_id=run_id)
            if isinstance(message, LogRecord):
                out.append(message)
            elif isinstance(message, RunResult):
                if self.result is None:
                    self.result = message
            else:
                self.exec = message
        if len(self.partial) > MAX_LINE_BYTES:
            out.append(problem_record(run_id, "record longer than 1 MiB dropped", self.partial))
            self.partial = b""
            self.skipping = True

    def close(self, now: datetime, out: list[LogRecord]) -> None:
        if self.partial and not self.skipping:
            self.feed(b"\n", now, out)
        self.partial = b""


class Capture:
    """The output of one run: reads its pipes (given their read ends) into batches."""

    def __init__(
        self, run_id: str, *, records_fd: int, stdout_fd: int, stderr_fd: int, sink: Sink
    ) -> None:
        self.run_id = run_id
        self.records = RecordsReader(run_id)
        self.stderr = OutputReader(run_id, Source.STDERR, Level.WARNING, tail=STDERR_TAIL_LINES)
        self._readers: dict[int, RecordsReader | OutputReader] = {
            records_fd: self.records,
            stdout_fd: OutputReader(run_id, Source.STDOUT, Level.INFO),
            stderr_fd: self.stderr,
        }
        self._sink = sink
        self._batch: list[LogRecord] = []
        self._batch_started = 0.0

    @property
    def open_fds(self) -> list[int]:
        """The pipes not at end-of-file yet."""
        return list(self._readers)

    @property
    def pending(self) -> bool:
        """Records wait to be delivered."""
        return bool(self._batch)

    @property
    def stderr_tail(self) -> tuple[str, ...]:
        tail = self.stderr.tail
        return () if tail is None else tail.lines()

    def read(self, fd: int, *, now: float, stamp: datetime) -> bool:
        """Read what ``fd`` has (it was readable); False once it is at end-of-file."""
        reader = self._readers[fd]
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self.hung_up(fd, now=now, stamp=stamp)
            return False
        if not self._batch:
            self._batch_started = now
        reader.feed(data, stamp, self._batch)
        return True

    def hung_up(self, fd: int, *, now: float, stamp: datetime) -> None:
        """``fd`` is at end-of-file with nothing left to read (poll said so: a hang-up
        without data), as ``read`` would have found with one more syscall."""
        if not self._batch:
            self._batch_started = now
        self._readers.pop(fd).close(stamp, self._batch)

    def deliver_if_due(self, now: float) -> None:
        """Deliver the batch if it is full or old enough."""
        if self._batch and (
            len(self._batch) >= BATCH_RECORDS or now - self._batch_started >= BATCH_SECONDS
        ):
            self.deliver()

    def deliver(self) -> None:
        """Hand the batch to the sink (in pieces of at most ``BATCH_RECORDS``)."""
        batch, self._batch = self._batch, []
        for start in range(0, len(batch), BATCH_RECORDS):
            self._sink(batch[start : start + BATCH_RECORDS])

    def finish(self) -> None:
        """End of supervision: what is left of every stream, then a last delivery."""
        stamp = datetime.now(UTC)
        for reader in self._readers.values():
            reader.close(stamp, self._batch)
        if self._readers:
            self._batch.append(
                LogRecord(
                    time=stamp,
                    level=Level.WARNING,
                    message="output still held open by a process outside the run; stopped reading",
                    run_id=self.run_id,
                    source=Source.LOGGER,
                )
            )
            self._readers.clear()
        if self._batch:
            self.deliver()
