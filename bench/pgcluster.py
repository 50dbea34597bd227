"""A PostgreSQL cluster of the benchmark's own, with ``pg_stat_statements`` loaded.

The extension needs ``shared_preload_libraries``, which means a server restart; the machine's
shared server is never restarted, so the benchmark runs the stack against a cluster it starts
itself on another port (``python -m bench.pgcluster start``), with the same PostgreSQL build.
It logs to CSV (the collector is on from the start) so that a capture window can turn
statement logging on with a reload alone.

``python -m bench.pgcluster start|stop|status [--port N] [--dir PATH]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_PORT = 55432
# Outside the checkout: the server runs as the postgres user, which cannot enter a clone in a
# private folder (CI clones into one).
DEFAULT_DIR = Path("/var/tmp/microservices-bench/pg")  # noqa: S108 - a fixed, documented place
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "max_connections": "200",
    "logging_collector": "on",
    "log_destination": "csvlog",
    "log_directory": "log",
    "log_filename": "postgresql.log",
    "log_parameter_max_length": "-1",
}
# log_min_duration_statement stays out of the command line: a -c option outranks ALTER SYSTEM,
# and the capture window turns it on with ALTER SYSTEM and a reload.


def bin_dir() -> Path:
    """The newest installed server build (the shared server's own, on this machine)."""
    builds = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not builds:
        found = shutil.which("postgres")
        if found is None:
            raise SystemExit("no PostgreSQL server binaries (apt-get install postgresql)")
        return Path(found).resolve().parent
    return builds[-1].parent


def _as_postgres(command: list[str]) -> list[str]:
    # The server refuses to run as root; as root we drop to the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_as_postgres(command), check=False, capture_output=True, text=True)


def start(port: int, directory: Path) -> None:
    binaries = bin_dir()
    if not (directory / "PG_VERSION").exists():
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory.parent, "postgres", "postgres")
            shutil.chown(directory, "postgres", "postgres")
        made = _run(
            [str(binaries / "initdb"), "-D", str(directory), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        )
        if made.returncode != 0:
            raise SystemExit(f"initdb failed: {made.stderr.strip()}")
    if status(directory):
        return
    options = " ".join([f"-p {port}", *(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items())])
    started = _run(
        [
            str(binaries / "pg_ctl"),
            "-D",
            str(directory),
            "-l",
            str(directory / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        ]
    )
    if started.returncode != 0:
        raise SystemExit(f"pg_ctl start failed: {started.stderr.strip() or started.stdout.strip()}")


def stop(directory: Path) -> None:
    if status(directory):
        _run([str(bin_dir() / "pg_ctl"), "-D", str(directory), "-m", "fast", "-w", "stop"])


def status(directory: Path) -> bool:
    if not (directory / "PG_VERSION").exists():
        return False
    return _run([str(bin_dir() / "pg_ctl"), "-D", str(directory), "status"]).returncode == 0


def postmaster_pid(directory: Path) -> int | None:
    try:
        return int((directory / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def csv_log(directory: Path) -> Path:
    return directory / "log" / "postgresql.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pgcluster")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    if args.command == "start":
        start(args.port, args.dir)
        print(args.port)
    elif args.command == "stop":
        stop(args.dir)
    else:
        running = status(args.dir)
        print("running" if running else "stopped")
        return 0 if running else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
