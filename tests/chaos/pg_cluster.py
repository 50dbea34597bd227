"""A PostgreSQL cluster of the suite's own, on another port: where a real server crash is the point.

The stack keeps its databases in it for the run (through the fault proxy), so the suite can kill
the whole server (SIGKILL to the postmaster's process group: no shutdown checkpoint, crash
recovery from the WAL on the next start) without touching the machine's PostgreSQL. It runs as
the ``postgres`` system user (PostgreSQL refuses root) with its data under ``CHAOS_PG_BASE``.

    python -m tests.chaos.pg_cluster start|stop|crash
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OwnPostgres:
    base: Path
    port: int
    user: str = "postgres"

    @classmethod
    def from_env(cls) -> OwnPostgres:
        return cls(Path(os.environ["CHAOS_PG_BASE"]), int(os.environ["CHAOS_PG_PORT"]))

    @property
    def data(self) -> Path:
        return self.base / "data"

    def _as_user(self, *argv: str, timeout_s: float = 120) -> str:
        command = ["runuser", "-u", self.user, "--", *argv] if os.geteuid() == 0 else list(argv)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])}: {(result.stderr or result.stdout).strip()[:400]}")
        return result.stdout

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.base.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(self.base, *_ids(self.user))
            self._as_user("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        # setsid: the server is a process group of its own, so a crash can take all of it at once.
        self._as_user(
            "setsid",
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=300",
            "start",
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def crash(self) -> int:
        """SIGKILL to the postmaster and every backend; returns the postmaster's pid."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("the suite's PostgreSQL wrote no postmaster.pid")
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        return pid

    def stop(self) -> None:
        try:
            self._as_user("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout_s=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pid = self.postmaster_pid()
            if pid is not None and _alive(pid):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def main(argv: list[str]) -> int:
    cluster = OwnPostgres.from_env()
    command = argv[0] if argv else ""
    if command == "start":
        cluster.start()
    elif command == "stop":
        cluster.stop()
    elif command == "crash":
        print(cluster.crash())
    else:
        print("usage: python -m tests.chaos.pg_cluster start|stop|crash", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
