"""Log lines handed to the output stream in batches, not one system call per line.

A host-mode process's standard output is a pipe to supervisord (a Dramatiq worker's goes through
its master first), so every line written on its own costs a write here, a read and a write in
each process it passes through: on these machines system calls are most of what a log line
costs (issue 11). Lines are kept for at most ``MAX_DELAY_S`` and written together; a warning or
an error, a full buffer, a fork and the process's exit write at once. Lines are only ever
written whole, so output from several threads or processes never interleaves mid-line.

What a batch risks is the last ``MAX_DELAY_S`` of info lines of a process killed with SIGKILL;
errors are never held.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
import time
from typing import Any, TextIO

MAX_DELAY_S = 0.05
MAX_PENDING_CHARS = 64 * 1024


class BatchedLineWriter:
    def __init__(self, stream: TextIO, *, max_delay_s: float = MAX_DELAY_S) -> None:
        self._stream = stream
        self._max_delay_s = max_delay_s
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._size = 0
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        self._batching = True
        os.register_at_fork(before=self.flush, after_in_child=self._after_fork)
        atexit.register(self.flush)
        # A forked child (a Dramatiq worker process) ends through multiprocessing, which runs its
        # finalizers but not atexit.
        multiprocessing.util.Finalize(None, self.flush, exitpriority=0)

    def write_line(self, line: str, *, urgent: bool = False) -> None:
        with self._lock:
            self._pending.append(line)
            self._size += len(line)
            if urgent or not self._batching or self._size >= MAX_PENDING_CHARS:
                self._write_pending()
                return
            if len(self._pending) == 1:
                self._start_thread()
                self._due.set()

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def stop_batching(self) -> None:
        """Write what is held and every later line at once (a process about to close its output)."""
        with self._lock:
            self._batching = False
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # the reader is gone (a closed pipe at shutdown): nothing left to tell

    def _start_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self._max_delay_s)
            self._due.clear()
            self.flush()

    def _after_fork(self) -> None:
        # The parent wrote what it held before the fork; the child starts empty, with a lock no
        # other thread can be holding and a writer thread of its own when it needs one.
        self._lock = threading.Lock()
        self._pending = []
        self._size = 0
        self._due = threading.Event()
        self._thread = None


class BatchedLogger:
    """structlog's logger for the writer: info and debug lines wait, the rest is written at once."""

    def __init__(self, writer: BatchedLineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write_line(message + "\n")

    debug = info = msg

    def warning(self, message: str) -> None:
        self._writer.write_line(message + "\n", urgent=True)

    warn = error = err = critical = fatal = exception = failure = warning


class BatchedLoggerFactory:
    def __init__(self, writer: BatchedLineWriter) -> None:
        self._writer = writer

    def __call__(self, *args: Any) -> BatchedLogger:
        return BatchedLogger(self._writer)


class BatchedHandler(logging.Handler):
    """The standard-library side (aiohttp, asyncpg, Dramatiq) through the same writer."""

    def __init__(self, writer: BatchedLineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._writer.write_line(line + "\n", urgent=record.levelno >= logging.WARNING)

    def flush(self) -> None:
        self._writer.flush()


_writers: dict[int, BatchedLineWriter] = {}


def writer_for(stream: TextIO) -> BatchedLineWriter:
    """One writer per output stream and process: logging is configured more than once in tests."""
    writer = _writers.get(id(stream))
    if writer is None or writer._stream is not stream:
        writer = _writers[id(stream)] = BatchedLineWriter(stream)
    return writer


def stop_batching() -> None:
    """Every writer of this process writes through from now on.

    For a process that closes its output itself before it ends: a Dramatiq worker process
    closes the pipe to its master after its last job, before multiprocessing's finalizers run.
    """
    for writer in list(_writers.values()):
        writer.stop_batching()
