"""Host mode's supervision (scripts/lib.sh, scripts/supervisor_events.py) on a supervisord of the
tests' own: a killed program comes back with no manual step, what it leaves behind is reaped,
a program that cannot start backs off and gives up, logs rotate by size, and deploy.sh's and
gateway.sh's commands go through supervisorctl."""

from __future__ import annotations

import configparser
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.config.conftest import ROOT, require_tool
from tests.net import free_port
from tests.ops.supervisor import Supervisor, load_events_module

events = load_events_module()

# A server that binds, then forks children serving the same socket (as nginx's workers do), so a
# SIGKILL of the parent leaves listeners behind that keep the port from a restarted parent.
WEB = textwrap.dedent(
    """
    import http.server, os, sys, time
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = str(os.getpid()).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    for _ in range(int(sys.argv[2])):
        if os.fork() == 0:
            server.serve_forever()
    print("listening", os.getpid(), flush=True)
    server.serve_forever()
    """
)
SPAM = textwrap.dedent(
    """
    import os, sys, time
    for i in range(int(sys.argv[1])):
        sys.stdout.write(f"{i:08d} " + "x" * 90 + "\\n")
        sys.stdout.flush()
    print("done", flush=True)
    time.sleep(3600)
    """
)


@pytest.fixture
def sv() -> Iterator[Supervisor]:
    require_tool("supervisord")
    supervisor = Supervisor(LOG_MAX_BYTES="64KB", LOG_BACKUPS="2")
    yield supervisor
    supervisor.close()


def script(sv: Supervisor, name: str, text: str) -> str:
    path = sv.base / name
    path.write_text(text)
    return str(path)


def get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
        return str(answer.read().decode())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead; only its parent has not reaped it yet.
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


def test_a_killed_program_comes_back_by_itself_and_its_orphans_are_reaped(sv: Supervisor) -> None:
    port = free_port()
    sv.launch("web", sys.executable, script(sv, "web.py", WEB), str(port), "2")
    first = sv.wait_running("web")
    children = [pid for pid, _ in events.group_members(first) if pid != first]
    assert len(children) == 2

    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    second = sv.wait_running("web", not_pid=first)
    answer = get(port)
    print(f"web back (RUNNING and answering) {time.monotonic() - killed_at:.2f} s after SIGKILL")

    # The children held the port; they were sent SIGTERM, so the new parent could bind it.
    assert not any(alive(pid) for pid in children)
    assert int(answer) in {second, *(pid for pid, _ in events.group_members(second))}
    assert "SIGTERM to what was left of its group" in (sv.log_dir / "supervisor_events.log").read_text()
    assert (sv.run_dir / "web.pid").read_text().strip() == str(second)


def test_a_program_that_cannot_start_backs_off_then_gives_up(sv: Supervisor) -> None:
    sv.sh("true", SV_STARTRETRIES="2")
    sv.launch("broken", "/bin/sh", "-c", "echo cannot start; exit 3", SV_STARTRETRIES="2")
    sv.wait_state("broken", "FATAL")
    # Three starts (the first and two retries), each logged, none counted as running.
    assert sv.log("broken").count("cannot start") == 3
    assert "gave up: broken entered FATAL state" in (sv.log_dir / "supervisord.log").read_text()
    assert not (sv.run_dir / "broken.pid").exists()


def test_a_fatal_program_is_started_again_later_until_it_runs() -> None:
    # A dependency down for longer than supervisord's retries (FATAL) must not need a person.
    sv = Supervisor(SV_RETRY_FATAL_S="1")
    try:
        flag = sv.base / "dependency-is-up"
        sv.launch("waits", "/bin/sh", "-c", f"[ -f {flag} ] || exit 3; exec sleep 3600", SV_STARTRETRIES="0")
        sv.wait_state("waits", "FATAL")
        flag.touch()
        sv.wait_running("waits")
        assert "FATAL for 1 s; starting it again" in (sv.log_dir / "supervisor_events.log").read_text()
    finally:
        sv.close()


def test_a_log_stays_under_its_size_limit(sv: Supervisor) -> None:
    # 1.0 MB of output against a 64 KB limit with 2 old files kept.
    sv.launch("spam", sys.executable, script(sv, "spam.py", SPAM), "10000")

    def written() -> str:  # the last line may have been rotated into spam.log.1 already
        return "".join(path.read_text() for path in sv.log_dir.glob("spam.log*"))

    deadline = time.monotonic() + 60
    while "done" not in written() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "done" in written()
    files = sorted(p.name for p in sv.log_dir.glob("spam.log*"))
    assert files == ["spam.log", "spam.log.1", "spam.log.2"]
    # supervisord rotates after the write that reaches the limit; one write is at most one pipe read.
    for name in files:
        assert (sv.log_dir / name).stat().st_size <= 64 * 1024 + 128 * 1024, name
    assert sum((sv.log_dir / n).stat().st_size for n in files) < 10000 * 100 / 2


def test_a_program_runs_with_the_environment_of_the_script_that_launched_it(sv: Supervisor) -> None:
    value = 'it\'s 100% "quoted" $HOME `x`'
    sv.launch(
        "env",
        sys.executable,
        "-c",
        "import os, time; print(repr(os.environ['SECRET_X'])); time.sleep(3600)",
        SECRET_X=value,
    )
    sv.wait_running("env")
    deadline = time.monotonic() + 30
    while not sv.log("env") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sv.log("env").strip() == repr(value)
    # The saved environment may hold secrets: only its owner reads it.
    assert stat.S_IMODE((sv.sv_dir / "env/env.env").stat().st_mode) == 0o600
    assert value not in sv.ctl("status")


def test_every_program_is_restarted_with_backoff_and_rotated_logs(sv: Supervisor) -> None:
    sv.sh('sv_program --priority 150 --stopsignal QUIT "$@"', "demo", "/bin/true", "a b")
    config = configparser.RawConfigParser()
    config.read(sv.sv_dir / "programs/demo.conf")
    program = config["program:demo"]
    assert program["autorestart"] == "true"
    assert int(program["startretries"]) >= 10
    assert program["stopsignal"] == "QUIT"
    assert program["stopasgroup"] == program["killasgroup"] == "true"
    assert program["stdout_logfile"] == f"{sv.log_dir}/demo.log"
    assert program["stdout_logfile_maxbytes"] == "64KB"
    assert program["stdout_logfile_backups"] == "2"
    assert "'a b'" in program["command"]


def test_stop_program_stops_it_and_forgets_it(sv: Supervisor) -> None:
    sv.launch("sleeper", "/bin/sleep", "3600")
    pid = sv.wait_running("sleeper")
    sv.sh('stop_program "$1"', "sleeper")
    assert not alive(pid)
    assert sv.state("sleeper") == ""
    assert not (sv.sv_dir / "programs/sleeper.conf").exists()


def run_deploy(sv: Supervisor, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts/deploy.sh"), *args],
        cwd=ROOT,
        env=sv.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_deploy_stop_and_status_talk_to_supervisord(sv: Supervisor) -> None:
    sv.launch("sleeper", "/bin/sleep", "3600")
    pid = sv.wait_running("sleeper")
    assert "sleeper" in run_deploy(sv, "ctl", "status").stdout
    stopped = run_deploy(sv, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped supervisord" in stopped.stdout
    assert not alive(pid)
    assert not (sv.run_dir / "supervisor.sock").exists()
    status = run_deploy(sv, "status")
    assert status.returncode == 1
    assert "supervisord is not running" in status.stdout


# Every port of deploy.sh's process table, on free ports: a stack running on this machine (the
# README's `deploy.sh local`, then `test.sh`) holds the fixed ones.
TABLE_PORTS = (
    "SMTP_PORT",
    "SMTP_SINK_HTTP_PORT",
    "FAKE_PROVIDER_PORT",
    "USER_API_PORT",
    "USER_API_PORT_2",
    "ORDER_API_PORT",
    "ORDER_API_PORT_2",
    "NOTIFIER_PORT",
    "WORKERS_METRICS_PORT",
)


def free_table_ports() -> dict[str, str]:
    return {name: str(free_port()) for name in TABLE_PORTS}


def test_deploy_local_refuses_a_port_that_another_process_holds(sv: Supervisor) -> None:
    import socket

    with socket.socket() as stray:
        stray.bind(("127.0.0.1", 0))
        stray.listen()
        port = stray.getsockname()[1]
        result = sv.sh(
            f'. "{ROOT}/scripts/deploy.sh"; local_defaults; require_free_ports',
            check=False,
            **{**free_table_ports(), "USER_API_PORT_2": str(port)},
        )
    assert result.returncode != 0
    assert f"port {port} (for user_api_2) is taken by another process (pid={os.getpid()}" in result.stderr


def test_deploy_local_stops_its_own_program_left_by_an_earlier_run(sv: Supervisor) -> None:
    port = free_port()
    py = str(ROOT / ".venv/bin/python")
    leftover = subprocess.Popen(  # as the process table runs it, but no supervisord above it
        [py, "-m", "notifier.fake_provider", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                get_health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                get_health.close()
                break
            except OSError:
                time.sleep(0.1)
        result = sv.sh(
            f'. "{ROOT}/scripts/deploy.sh"; local_defaults; require_free_ports',
            check=False,
            **{**free_table_ports(), "FAKE_PROVIDER_PORT": str(port)},
            VENV=str(ROOT / ".venv"),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "stopping fake_provider left by an earlier run" in result.stdout
        assert leftover.wait(timeout=30) is not None
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_deploy_stop_ends_the_programs_of_a_supervisord_that_was_killed(sv: Supervisor) -> None:
    # supervisord itself killed: its programs live on; their pid files say where they are.
    sv.launch("sleeper", "/bin/sh", "-c", "sleep 3600 & exec sleep 3600")
    pid = sv.wait_running("sleeper")
    os.kill(int((sv.run_dir / "supervisord.pid").read_text()), signal.SIGKILL)
    assert alive(pid)
    stopped = run_deploy(sv, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "not supervised" in stopped.stdout
    assert not alive(pid)
    assert not (sv.run_dir / "sleeper.pid").exists()


def test_the_gateway_runs_under_supervision_logs_through_it_and_survives_a_kill(sv: Supervisor) -> None:
    require_tool("nginx")
    http_port, https_port, status_port = free_port(), free_port(), free_port()
    ports = {
        "GATEWAY_HTTP_PORT": str(http_port),
        "GATEWAY_HTTPS_PORT": str(https_port),
        "GATEWAY_STATUS_PORT": str(status_port),
    }
    sv.env.update(ports)
    gateway = ["bash", str(ROOT / "scripts/gateway.sh")]
    started = subprocess.run(
        [*gateway, "start"], cwd=ROOT, env=sv.env, capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stdout + started.stderr
    master = sv.wait_running("gateway")
    workers = [pid for pid, _ in events.group_members(master) if pid != master]
    assert workers

    trace = uuid.uuid4().hex
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/health", headers={"X-Request-ID": trace})
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - local
        assert answer.status == 200
    # nginx writes its access log to stdout; supervisord puts it in gateway.access.log.
    deadline = time.monotonic() + 30
    while trace not in sv.log("gateway.access") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trace in sv.log("gateway.access")

    os.kill(master, signal.SIGKILL)
    sv.wait_running("gateway", not_pid=master)
    deadline = time.monotonic() + 60
    code = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=2) as answer:
                code = answer.status
                break
        except OSError:
            time.sleep(0.2)
    assert code == 200
    assert not any(alive(pid) for pid in workers)

    stopped = subprocess.run(
        [*gateway, "stop"], cwd=ROOT, env=sv.env, capture_output=True, text=True, timeout=60
    )
    assert stopped.returncode == 0, stopped.stderr
    assert sv.state("gateway") == ""
