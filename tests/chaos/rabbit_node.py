"""A RabbitMQ node of the suite's own, on other ports: where a real broker crash is the point.

The stack talks to it (through the fault proxy) for the whole run, so the suite can crash it
(``kill -9`` of its Erlang VM, then start it again) and raise its memory alarm (publishers are
blocked) without touching the machine's RabbitMQ. Its name, ports and data directory come from
``scripts/chaos.sh`` (``CHAOS_RABBIT_*``); the Erlang cookie lives in that directory (``HOME``).

    python -m tests.chaos.rabbit_node start|stop|crash|alarm-on|alarm-off
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RABBIT_BIN = Path(os.environ.get("CHAOS_RABBIT_BIN", "/usr/lib/rabbitmq/bin"))


@dataclass(frozen=True)
class OwnRabbit:
    base: Path
    node: str
    amqp_port: int
    dist_port: int
    management_port: int

    @classmethod
    def from_env(cls) -> OwnRabbit:
        env = os.environ
        return cls(
            Path(env["CHAOS_RABBIT_BASE"]),
            env.get("CHAOS_RABBIT_NODE", "chaos@localhost"),
            int(env["CHAOS_RABBIT_PORT"]),
            int(env["CHAOS_RABBIT_DIST_PORT"]),
            int(env["CHAOS_RABBIT_MANAGEMENT_PORT"]),
        )

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
        }

    def ctl(self, *args: str, timeout_s: float = 60) -> str:
        result = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()[:300]}")
        return result.stdout

    def start(self) -> None:
        for folder in ("mnesia", "log"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        # Queue depths refreshed every second (default 5 s): the suite reads drain times from them.
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            "collect_statistics_interval = 1000\n"
        )
        with (self.base / "out.log").open("ab") as out:
            subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")],
                cwd=self.base,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while True:
            try:
                self.ctl("await_startup", "--timeout", "30")
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def pid(self) -> int | None:
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def crash(self) -> int:
        """``kill -9`` of the node's Erlang VM (the pid it wrote); returns that pid."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError("the suite's RabbitMQ node wrote no pid file")
        os.kill(pid, signal.SIGKILL)
        return pid

    def memory_alarm(self, on: bool) -> None:
        # 10 MB is below what any node uses: the alarm fires within a memory-check interval.
        self.ctl("set_vm_memory_high_watermark", *(("absolute", "10000000") if on else ("0.4",)))

    def stop(self) -> None:
        pid = self.pid()
        try:
            self.ctl("stop", timeout_s=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    node = OwnRabbit.from_env()
    command = argv[0] if argv else ""
    if command == "start":
        node.start()
    elif command == "stop":
        node.stop()
    elif command == "crash":
        print(node.crash())
    elif command in ("alarm-on", "alarm-off"):
        node.memory_alarm(command == "alarm-on")
    else:
        print("usage: python -m tests.chaos.rabbit_node start|stop|crash|alarm-on|alarm-off", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
