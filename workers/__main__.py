"""``python -m workers [dramatiq options]``: run ``dramatiq workers.app`` ready for metrics.

Dramatiq's Prometheus middleware shares metrics between its processes through files in
``PROMETHEUS_MULTIPROC_DIR``, and prometheus_client decides at import whether to use them. So
the variable must be set, and the directory emptied of a previous run's files (they would be
summed into this run's counters), before dramatiq starts — which is what this wrapper does,
then it replaces itself (same pid, for the supervisor) with a fresh interpreter that imports with
that environment and runs Dramatiq's command line in-process (``dramatiq workers.app …``) with our
ECS logging, so the master's own lines are JSON with ``service.name`` like its workers'. Metrics
are served on ``WORKERS_METRICS_PORT`` (default 9191) at ``HTTP_HOST``.

Options are Dramatiq's, e.g. ``python -m workers --processes 2 --threads 8``. With
``--processes 1`` the worker runs in this process, without Dramatiq's master and its metrics
fork (``workers/inprocess.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from common.settings import SettingsError, load_settings
from workers.settings import WorkerSettings

DEFAULT_MULTIPROC_DIR = "var/prometheus/workers"
# Set on the re-executed interpreter: the environment is ready, run Dramatiq.
PREPARED = "WORKERS_ENVIRONMENT_PREPARED"


def prepare_multiproc_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def dramatiq_environment(settings: WorkerSettings, directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        # Dramatiq's own names for the same directory and for its exposition server.
        "dramatiq_prom_db": str(directory),
        "dramatiq_prom_host": settings.http_host,
        "dramatiq_prom_port": str(settings.workers_metrics_port),
        PREPARED: "1",
    }


def run_dramatiq(settings: WorkerSettings, args: list[str]) -> int:
    # Imported here, after the re-exec: prometheus_client reads the prepared environment at import.
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from common.logging import configure_logging
    from workers.inprocess import run_in_process

    # Dramatiq's own logging setup would replace ours with its text format.
    configure_logging("workers", settings.log_level, settings.log_format)
    parsed = make_argument_parser().parse_args(["workers.app", *args, "--skip-logging"])  # type: ignore[no-untyped-call]
    if parsed.processes == 1:
        return run_in_process(settings, parsed)
    return int(dramatiq_main(parsed) or 0)  # type: ignore[no-untyped-call]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = load_settings(WorkerSettings)
    except SettingsError as exc:
        print(f"workers: {exc}", file=sys.stderr)
        return 2
    if os.environ.get(PREPARED) == "1":
        return run_dramatiq(settings, args)
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or DEFAULT_MULTIPROC_DIR).resolve()
    prepare_multiproc_dir(directory)
    os.nice(settings.worker_nice)  # kept across the exec, by Dramatiq's processes too
    command = [sys.executable, "-m", "workers", *args]
    os.execve(sys.executable, command, dramatiq_environment(settings, directory))  # noqa: S606 - our own interpreter


if __name__ == "__main__":
    sys.exit(main())
