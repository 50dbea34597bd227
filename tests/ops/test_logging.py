"""Every log line of every process carries ``service.name`` and one trace id field (``trace.id``):
structlog and standard-library lines, from the main thread and from a worker's threads, the
workers' master included; and lines are written whole (in batches, common.logsink), so lines
from Dramatiq's worker processes cannot interleave in the master's pipe, and a batch is written
by the time a warning is logged, a little later, or when the process (a forked worker too) ends."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from common.logging import bind_trace_id, configure_logging
from common.logsink import MAX_DELAY_S, writer_for
from tests.config.conftest import ROOT
from tests.net import free_port, stop_process, wait_for_port


class Recorder(io.StringIO):
    """A stream that remembers each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[Recorder]:
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield Recorder()
    structlog.contextvars.clear_contextvars()
    structlog.configure(**saved_structlog)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def configure(stream: Recorder, service: str, fmt: str = "json") -> None:
    """configure_logging writing to ``stream`` (it takes sys.stdout as it is when called)."""
    real, sys.stdout = sys.stdout, stream
    try:
        configure_logging(service, fmt=fmt)
    finally:
        sys.stdout = real


def lines(stream: Recorder) -> list[dict[str, Any]]:
    writer_for(stream).flush()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def in_thread(target: Any) -> None:
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


def test_every_line_from_every_thread_names_the_service(stream: Recorder) -> None:
    configure(stream, "workers")
    structlog.get_logger("t").info("main thread")
    logging.getLogger("dramatiq.t").warning("stdlib, main thread")

    def work() -> None:
        structlog.get_logger("t").info("worker thread")
        logging.getLogger("dramatiq.t").warning("stdlib, worker thread")

    in_thread(work)
    logged = lines(stream)
    assert [line["message"] for line in logged] == [
        "main thread",
        "stdlib, main thread",
        "worker thread",
        "stdlib, worker thread",
    ]
    assert all(line["service"]["name"] == "workers" for line in logged), logged


def test_one_trace_id_field_whichever_way_it_was_given(stream: Recorder) -> None:
    configure(stream, "notifier")

    def job() -> None:
        bind_trace_id("a" * 32)
        # The envelope's name for it, as fan-out logs it, on top of the bound one.
        structlog.get_logger("t").info("fanned out", trace_id="a" * 32)
        logging.getLogger("aiosmtplib").warning("stdlib inside the job")

    in_thread(job)
    structlog.get_logger("t").info("given only as a keyword", trace_id="b" * 32)
    logged = lines(stream)
    assert [line["trace"]["id"] for line in logged] == ["a" * 32, "a" * 32, "b" * 32]
    assert not any("trace_id" in line for line in logged)


def test_lines_are_written_whole_in_batches_and_a_warning_at_once(stream: Recorder) -> None:
    configure(stream, "workers")
    for n in range(3):
        structlog.get_logger("t").info("held", n=n)
    assert stream.writes == []  # info lines wait for the batch...
    logging.getLogger("t").warning("stdlib")
    # ... which a warning writes at once, in one write, every line whole and in order.
    assert len(stream.writes) == 1
    assert [json.loads(line)["message"] for line in stream.writes[0].splitlines()] == ["held"] * 3 + [
        "stdlib"
    ]
    structlog.get_logger("t").info("later")
    deadline = time.monotonic() + 5
    while len(stream.writes) == 1 and time.monotonic() < deadline:
        time.sleep(MAX_DELAY_S / 5)
    assert len(stream.writes) == 2, "an info line alone is written after the batch delay"
    assert all(text.endswith("\n") for text in stream.writes)


def _log_in_a_forked_child(path: str) -> None:
    out = open(path, "w")  # noqa: SIM115 - open until the process ends, like its stdout
    real, sys.stdout = sys.stdout, out
    try:
        configure_logging("workers")
    finally:
        sys.stdout = real
    structlog.get_logger("t").info("the child's last line")
    # Returning ends the process through multiprocessing, as a Dramatiq worker process ends.


def test_a_forked_worker_process_writes_its_held_lines_when_it_ends(tmp_path: Path, stream: Recorder) -> None:
    path = tmp_path / "child.log"
    child = multiprocessing.get_context("fork").Process(target=_log_in_a_forked_child, args=(str(path),))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == [
        "the child's last line"
    ]


def test_console_lines_name_the_service_too(stream: Recorder) -> None:
    configure(stream, "user_api", fmt="console")
    structlog.get_logger("t").info("structlog")
    logging.getLogger("aiohttp.server").warning("stdlib")
    written = stream.getvalue().splitlines()
    assert len(written) == 2
    assert all("service.name=user_api" in line for line in written), written


def run_workers(*args: str, **env: str) -> tuple[int, list[dict[str, Any]]]:
    """``python -m workers ARGS`` with JSON logs: its exit code and its log lines."""
    result = subprocess.run(
        [sys.executable, "-m", "workers", *args],
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "json", "PROMETHEUS_MULTIPROC_DIR": "", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    logged = [json.loads(line) for line in result.stdout.splitlines()]
    assert logged, result.stderr
    assert all(line["service"]["name"] == "workers" for line in logged)
    return result.returncode, logged


def test_the_workers_master_logs_ecs_json_too() -> None:
    # A pid file it cannot write: Dramatiq's master logs a critical line and exits before it
    # starts any worker (no broker needed). Its own lines used to be Dramatiq's text format.
    returncode, logged = run_workers("--processes", "2", "--pid-file", "/nonexistent/dir/workers.pid")
    assert returncode != 0
    assert any("PID file" in line["message"] and line["log.level"] == "critical" for line in logged)


def test_one_worker_process_refuses_the_masters_options_in_ecs_json(tmp_path: Path) -> None:
    # --processes 1 runs the worker in this process: there is no master to write a pid file.
    returncode, logged = run_workers("--processes", "1", "--pid-file", str(tmp_path / "workers.pid"))
    assert returncode == 2
    refusal = [line for line in logged if line["message"] == "workers_option_needs_master"]
    assert refusal, logged
    assert refusal[0]["options"] == ["--pid-file"]
    assert not (tmp_path / "workers.pid").exists()


def test_one_worker_process_ends_at_once_when_its_metrics_port_is_taken() -> None:
    # Another copy still running: it must not consume beside it, nor hang on its threads.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        returncode, logged = run_workers(
            "--processes", "1", HTTP_HOST="127.0.0.1", WORKERS_METRICS_PORT=str(port)
        )
    assert returncode == 3
    refusals = [line for line in logged if line["message"] == "workers_metrics_port_unavailable"]
    assert [line["port"] for line in refusals] == [port]


@pytest.mark.parametrize("tool", ["alert_sink", "smtp_sink", "fake_provider"])
def test_the_development_stand_ins_name_themselves_on_their_start_line(tool: str, tmp_path: Path) -> None:
    # Host mode runs them under supervisord beside the services: their lines land in the same
    # log pipeline, so they carry service.name too (the alert sink's did not).
    port = free_port()
    args = ["--port", str(port)]
    if tool == "smtp_sink":
        args += ["--http-port", str(free_port()), "--maildir", str(tmp_path / "mail")]
    process = subprocess.Popen(
        [sys.executable, "-m", f"notifier.{tool}", *args], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        wait_for_port(port, process, tool, seconds=60)
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
    finally:
        stop_process(process)
    assert first["service.name"] == tool, first
    assert "listening" in first["message"]
