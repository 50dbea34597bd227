"""The order-pipeline benchmark: ``./scripts/bench.sh`` (``python -m bench``), see bench/README.md.

Measures a running ``deploy.sh local`` stack through the gateway — closed loop (wrk), open loop
(Poisson arrivals, latency from the intended send time), CPU per fully processed order by
component from ``/proc`` — beside same-run baselines (nginx ``return 200``, a bare aiohttp
handler, the system's own SQL replayed by a bare client). Nothing here asserts a speed.
"""
