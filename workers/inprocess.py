"""One Dramatiq worker in this very process: what ``python -m workers --processes 1`` runs.

With one worker process, Dramatiq's master adds a process of its own and a fork for the metrics
exposition server (about 80 MB of RSS between them), and relays every line the worker writes
through a pipe. Its supervision adds nothing here: when its only worker dies it exits too, and
supervisord (host mode) or the orchestrator restarts it. So the worker runs here, under the
supervisor's own pid, with the metrics served by a thread, and the lifecycle Dramatiq's worker
process follows: process boot, worker threads, a graceful stop on SIGTERM (the message in hand
is finished), a second signal to give up.

Options that only concern the master (a pid file, a log file, spawn, forks, reloading on file
changes) are refused with exit code 2 rather than ignored.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import threading
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog

# Imported only by workers/__main__.py after its re-exec: prometheus_client sees the prepared
# PROMETHEUS_MULTIPROC_DIR. Dramatiq's exit codes, so the supervisor sees what the master gives.
from dramatiq import Worker
from dramatiq.cli import RET_CONNECT, RET_IMPORT, RET_KILLED, RET_OK, import_broker
from dramatiq.errors import BrokerConnectionError
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector

from workers.settings import WorkerSettings

MASTER_ONLY = {
    "pid_file": "--pid-file",
    "log_file": "--log-file",
    "use_spawn": "--use-spawn",
    "forks": "--fork-function",
    "watch": "--watch",
}

log = structlog.get_logger(__name__)


def master_only_options(args: argparse.Namespace) -> list[str]:
    return [flag for dest, flag in MASTER_ONLY.items() if getattr(args, dest, None)]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape is not worth a log line."""


def bind_metrics(settings: WorkerSettings) -> WSGIServer:
    # Every process of this worker writes its metrics to PROMETHEUS_MULTIPROC_DIR (Dramatiq's
    # middleware and ours); the collector reads them all on each scrape.
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    app = make_wsgi_app(registry)
    address = (settings.http_host, settings.workers_metrics_port)
    return make_server(*address, app, ThreadingWSGIServer, handler_class=_QuietHandler)


def run_in_process(settings: WorkerSettings, args: argparse.Namespace) -> int:
    refused = master_only_options(args)
    if refused:
        log.error("workers_option_needs_master", options=refused, hint="use --processes 2 or more")
        return RET_IMPORT

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            # Give up on the message in hand: unacked, RabbitMQ delivers it again.
            os._exit(RET_KILLED)
        log.info("workers_stopping", signal=signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    try:
        # Bound first, before any thread is started: a port taken (another copy running) ends it
        # here. Served once the worker runs: deploy.sh and the fault suite read that as ready.
        server = bind_metrics(settings)
    except OSError as exc:
        log.error("workers_metrics_port_unavailable", port=settings.workers_metrics_port, error=str(exc))
        return RET_CONNECT
    try:
        _, broker = import_broker(args.broker)  # type: ignore[no-untyped-call]
        broker.emit_after("process_boot")
        for module in args.modules:
            importlib.import_module(module)
        worker = Worker(broker, queues=args.queues, worker_threads=args.threads)
        worker.start()
    except ImportError:
        log.exception("workers_import_failed")
        server.server_close()
        return RET_IMPORT
    except BrokerConnectionError:
        log.exception("workers_broker_connection_failed")
        server.server_close()
        return RET_CONNECT

    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("workers_ready", threads=args.threads, metrics_port=settings.workers_metrics_port)
    while not stopping.wait(1):
        pass
    worker.stop(timeout=args.worker_shutdown_timeout)
    broker.close()
    server.shutdown()
    server.server_close()
    return RET_OK
