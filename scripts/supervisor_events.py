"""supervisord event listener for host mode (scripts/lib.sh configures it).

Two jobs supervisord does not do itself:

* **Orphans.** supervisord puts each program in its own process group and restarts the program
  when it exits, but a program killed with SIGKILL leaves its children behind: nginx's workers
  keep ports 80/443, Dramatiq's worker processes keep consuming and its metrics fork keeps port
  9191, so the restarted program cannot bind or runs twice. When a program exits, this listener
  sends SIGTERM to what is left of its process group (Dramatiq's workers finish the message in
  hand, nginx's workers their requests), then SIGKILL after a grace period to those same processes.
* **Pid files.** ``var/run/NAME.pid`` holds the pid of each running program (for scripts and
  people used to pid files; ``supervisorctl pid NAME`` says the same).
* **No final give-up.** supervisord stops retrying a program that failed to start
  ``startretries`` times in a row (state FATAL: a dependency down for minutes at start-up). This
  listener starts it again after ``--retry-fatal-after`` seconds, for as long as it stays FATAL.

Speaks supervisord's event listener protocol on stdin/stdout and logs to stderr; the standard
library, plus supervisor's own client module (next to supervisord) to start a FATAL program.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

RUNNING = "PROCESS_STATE_RUNNING"
EXITED = "PROCESS_STATE_EXITED"
FATAL = "PROCESS_STATE_FATAL"
GONE = {"PROCESS_STATE_STOPPED", "PROCESS_STATE_FATAL", "PROCESS_STATE_BACKOFF", EXITED}


def parse_tokens(line: str) -> dict[str, str]:
    """``key:value key:value`` as supervisord writes headers and state payloads."""
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, start time) of every process in the group; the start time tells a reused pid apart."""
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append((int(entry.name), fields[19]))
    return members


def signal_members(members: Iterable[tuple[int, str]], signum: int, proc: Path = Path("/proc")) -> list[int]:
    signalled = []
    for pid, started in members:
        try:
            stat = (proc / str(pid) / "stat").read_text()
            if stat[stat.rindex(")") + 2 :].split()[19] != started:
                continue  # the pid now belongs to another process
            os.kill(pid, signum)
            signalled.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    return signalled


class Listener:
    def __init__(
        self, run_dir: Path, grace_s: float, retry_fatal_s: float = 0, log: TextIO = sys.stderr
    ) -> None:
        self.run_dir = run_dir
        self.grace_s = grace_s
        self.retry_fatal_s = retry_fatal_s
        self.log = log

    def say(self, text: str) -> None:
        print(text, file=self.log, flush=True)

    def handle(self, event: str, payload: dict[str, str]) -> None:
        name = payload.get("processname", "")
        if not name or name == payload.get("pool"):
            return
        pidfile = self.run_dir / f"{name}.pid"
        if event == RUNNING and payload.get("pid"):
            tmp = pidfile.with_suffix(".pid.tmp")
            tmp.write_text(payload["pid"] + "\n")
            tmp.replace(pidfile)
        elif event in GONE:
            pidfile.unlink(missing_ok=True)
        if event == EXITED and payload.get("pid"):
            self.reap(name, int(payload["pid"]))
        if event == FATAL and self.retry_fatal_s > 0:
            group = payload.get("groupname", name)
            timer = threading.Timer(self.retry_fatal_s, self._start_again, args=(f"{group}:{name}",))
            timer.daemon = True
            timer.start()

    def reap(self, name: str, pgid: int) -> None:
        members = group_members(pgid)
        if not members:
            return
        terminated = signal_members(members, signal.SIGTERM)
        print(
            f"{name}: exited; SIGTERM to what was left of its group: {terminated}", file=self.log, flush=True
        )
        timer = threading.Timer(self.grace_s, self._kill_leftovers, args=(name, members))
        timer.daemon = True
        timer.start()

    def _start_again(self, name: str) -> None:
        # Not from the event loop: supervisord waits for this listener's answer to each event.
        try:
            from supervisor import childutils  # type: ignore[import-not-found]

            rpc = childutils.getRPCInterface(os.environ)
            if rpc.supervisor.getProcessInfo(name)["statename"] == "FATAL":
                self.say(f"{name}: FATAL for {self.retry_fatal_s:g} s; starting it again")
                rpc.supervisor.startProcess(name, False)
        except Exception as exc:  # the next FATAL event schedules another try
            self.say(f"{name}: could not start it again: {type(exc).__name__}: {exc}")

    def _kill_leftovers(self, name: str, members: list[tuple[int, str]]) -> None:
        killed = signal_members(members, signal.SIGKILL)
        if killed:
            print(
                f"{name}: SIGKILL to leftovers after {self.grace_s:g} s: {killed}", file=self.log, flush=True
            )


def serve(listener: Listener, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    while True:
        stdout.write("READY\n")
        stdout.flush()
        header_line = stdin.readline()
        if not header_line:
            return  # supervisord is gone
        header = parse_tokens(header_line)
        payload_text = stdin.read(int(header.get("len", "0")))
        # A state payload is one line of tokens; anything after it (process logs) is not ours.
        payload = parse_tokens(payload_text.split("\n", 1)[0])
        try:
            listener.handle(header.get("eventname", ""), {**payload, "pool": header.get("pool", "")})
        except Exception as exc:  # never let one bad event stop the listener
            print(
                f"event {header_line.strip()!r}: {type(exc).__name__}: {exc}", file=listener.log, flush=True
            )
        stdout.write("RESULT 2\nOK")
        stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--grace", type=float, default=30.0, help="seconds before SIGKILL of leftovers")
    parser.add_argument(
        "--retry-fatal-after",
        type=float,
        default=60.0,
        help="seconds before a FATAL program is started again; 0: never",
    )
    args = parser.parse_args(argv)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    serve(Listener(args.run_dir, args.grace, args.retry_fatal_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
