"""The run's table (markdown, printed and written beside results.json) and its two plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

NONE = "-"
HEADER = [
    "load",
    "offered/s",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "fully processed",
    "drain s",
    "sustained",
    "CPU ms/order",
]


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _load_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for run in results["closed_loop"]:
        wrk = run["wrk"]
        latency = wrk["latency_ms"]
        rows.append(
            _row(
                [
                    f"closed, {run['connections']} conn",
                    NONE,
                    wrk["requests_per_s"],
                    _ms(latency["p50"]),
                    _ms(latency["p99"]),
                    wrk["non_2xx"] + wrk["socket_errors"],
                    f"{run['fully_processed']}/{run['accepted']}",
                    run["drain_s"],
                    run["sustained"],
                    run["cpu_ms_per_order_total"],
                ]
            )
        )
    for run in results["open_loop"]:
        latency = run["client"]["latency_ms"]
        rows.append(
            _row(
                [
                    "open loop",
                    run["rate"],
                    run["client"]["achieved_rate"],
                    _ms(latency["p50"]),
                    _ms(latency["p99"]),
                    run["errors"],
                    f"{run['fully_processed']}/{run['accepted']}",
                    run["drain_s"],
                    run["sustained"],
                    run["cpu_ms_per_order_total"],
                ]
            )
        )
    return rows


def _baseline_lines(baselines: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("nginx_return_200", "bare_aiohttp"):
        base = baselines.get(name)
        if base:
            p99, rate, conns = _ms(base["latency_ms"]["p99"]), base["requests_per_s"], base["connections"]
            lines.append(
                f"- {name}: {rate} req/s at {conns} connections, p99 {p99} ms, "
                f"{base['cpu_ms_per_request']} ms CPU per request"
            )
    replay = baselines.get("sql_replay")
    if replay:
        lines.append(
            f"- SQL replay ({replay['orders']} orders, {replay['sessions']} sessions): "
            f"{replay['statements_per_order']} statements per order, "
            f"{replay['cpu_ms_per_order']} ms CPU per order (psql + backends; "
            f"{replay['server_cpu_ms_per_order']} ms in PostgreSQL), {replay['errors']} errors"
        )
        for message, count in replay.get("error_kinds", {}).items():
            lines.append(f"  - {count}x: {message}")
    return lines


def table(results: dict[str, Any]) -> str:
    lines = [f"Run {results['started_at']} ({results['mode']}), {results['machine']['summary']}", ""]
    lines += [_row(HEADER), _row(["---"] * len(HEADER)), *_load_rows(results), ""]
    lines.append(
        f"Open-loop maximum with p99 <= 100 ms and no error: {results.get('open_loop_max_rate')} orders/s"
    )
    get = results.get("get_order")
    if get:
        lines.append(
            f"GET /api/orders/{{id}} through the gateway: {get['requests_per_s']} req/s, "
            f"p99 {_ms(get['latency_ms']['p99'])} ms, errors {get['non_2xx'] + get['socket_errors']}"
        )
    main = results.get("main_run")
    if main:
        lines += ["", f"CPU ms per fully processed order by component ({main['label']}):", ""]
        lines += [_row(["component", "ms/order"]), _row(["---", "---"])]
        for name, value in sorted(main["cpu_ms_per_order"].items(), key=lambda kv: -kv[1]):
            lines.append(_row([name, value]))
    if results.get("statements"):
        stats = results["statements"]
        lines += [
            "",
            f"SQL statements per order: {stats['per_order_total']} ({stats['per_order_by_database']})",
        ]
    if results.get("baselines"):
        lines += ["", "Baselines in the same run:", "", *_baseline_lines(results["baselines"])]
    if results.get("ratios"):
        lines += ["", "Ratios (system / baseline):", ""]
        lines += [f"- {name}: {value}" for name, value in results["ratios"].items()]
    memory = results.get("memory", {})
    if memory:
        lines += [
            "",
            f"Memory of the Python processes, idle: {memory['python_idle_rss_mb']} MB RSS, "
            f"{memory['python_idle_pss_mb']} MB PSS",
        ]
        soak = memory.get("soak")
        if soak:
            lines.append(
                f"Soak {soak['seconds']} s at {soak['rate']}/s: "
                f"PSS {soak['first_mb']} -> {soak['last_mb']} MB (max {soak['max_mb']})"
            )
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    runs = results["open_loop"]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        rates = [run["rate"] for run in runs]
        for name in ("p50", "p90", "p99", "p999"):
            ax.plot(rates, [run["client"]["latency_ms"][name] for run in runs], marker="o", label=name)
        ax.axhline(100, color="grey", linestyle="--", linewidth=0.8)
        ax.set(
            xlabel="offered rate (orders/s, Poisson)", ylabel="latency ms (from intended send)", yscale="log"
        )
        ax.set_title("POST /api/orders through the gateway, open loop")
        ax.legend()
        fig.tight_layout()
        path = folder / "latency_vs_rate.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    bars = [(f"closed {run['connections']}", run["cpu_ms_per_order"]) for run in results["closed_loop"]]
    if bars:
        components = sorted({name for _, parts in bars for name in parts})
        fig, ax = plt.subplots(figsize=(7, 4.5))
        bottoms = [0.0] * len(bars)
        # Fifteen components: the default cycle of ten colours would give two of them one colour.
        palette = plt.get_cmap("tab20")
        colours = [palette(i) for i in range(palette.N)]
        for index, name in enumerate(components):
            values = [parts.get(name, 0.0) for _, parts in bars]
            colour = colours[index % len(colours)]
            ax.bar([label for label, _ in bars], values, bottom=bottoms, label=name, color=colour)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        ax.set(ylabel="CPU ms per fully processed order")
        ax.set_title("Box CPU per order by component (idle subtracted)")
        handles, labels = ax.get_legend_handles_labels()
        # Listed top to bottom, as the bars are stacked.
        ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
        fig.tight_layout()
        path = folder / "cpu_per_order.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
