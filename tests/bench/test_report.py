"""The benchmark's table and plots from a results document (their shape, not any speed)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import baselines, report

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:80/
  Latency   1.00ms
{"requests":1000,"duration_us":2000000,"bytes":1,"errors":{"connect":0,"read":1,"write":0,"status":7,"timeout":2},"latency_ms":{"p50":1.0,"p90":2.0,"p99":3.0,"p999":4.0,"max":5.0,"mean":1.2}}
"""


def test_wrk_report_line_is_read_with_rate_and_errors() -> None:
    parsed = baselines.parse_wrk(WRK_OUTPUT)
    assert parsed["requests_per_s"] == 500.0
    assert (parsed["non_2xx"], parsed["socket_errors"]) == (7, 3)


def results() -> dict[str, object]:
    wrk = json.loads(WRK_OUTPUT.splitlines()[-1]) | {
        "requests_per_s": 500.0,
        "non_2xx": 0,
        "socket_errors": 0,
    }
    phase = {
        "accepted": 10,
        "fully_processed": 10,
        "drain_s": 1.0,
        "sustained": True,
        "cpu_ms_per_order": {"workers": 20.0, "postgresql:orders": 3.0},
        "cpu_ms_per_order_total": 23.0,
    }
    return {
        "started_at": "2026-12-01T00:00:00+00:00",
        "mode": "quick",
        "machine": {"summary": "2 cores"},
        "closed_loop": [{**phase, "connections": 16, "wrk": wrk}],
        "open_loop": [
            {
                **phase,
                "rate": 20,
                "errors": 0,
                "client": {"achieved_rate": 19.5, "latency_ms": wrk["latency_ms"]},
            }
        ],
        "open_loop_max_rate": 20,
        "get_order": wrk,
        "main_run": {"label": "closed loop, 16 connections", **phase},
        "statements": {"per_order_total": 20.0, "per_order_by_database": {"orders": 12.0}},
        "baselines": {"nginx_return_200": {"connections": 16, "cpu_ms_per_request": 0.01, **wrk}},
        "ratios": {"x": 0.5},
        "memory": {"python_idle_rss_mb": 300.0, "python_idle_pss_mb": 250.0},
    }


def test_table_names_every_run_and_component() -> None:
    text = report.table(results())
    assert "| closed, 16 conn |" in text
    assert "| open loop | 20 |" in text
    assert "| workers | 20.0 |" in text
    assert "nginx_return_200: 500.0 req/s" in text
    assert "Open-loop maximum with p99 <= 100 ms and no error: 20 orders/s" in text


def test_plots_are_written(tmp_path: Path) -> None:
    written = report.plots(results(), tmp_path)
    assert [path.name for path in written] == ["latency_vs_rate.png", "cpu_per_order.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written)
