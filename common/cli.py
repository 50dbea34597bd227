"""The command line every API service shares: ``python -m SERVICE serve [--port N] | migrate``.

A service describes itself once (``ServiceCli``); extra commands (user_api's ``create-admin``) plug
in beside the two common ones.

``serve`` stops gracefully on SIGTERM or SIGINT: readiness goes 503 at once, the process keeps
serving for ``SHUTDOWN_DRAIN_S``, then stops accepting connections, lets requests in flight finish
(up to ``SHUTDOWN_TIMEOUT_S``) and only then runs the cleanup contexts (the outbox relay finishes
its batch, pools close). No request that was accepted fails because the process was asked to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import structlog
from aiohttp import web

from common.health import start_draining
from common.logging import configure_logging
from common.migrations import ensure_database, migrate_dsn
from common.settings import SettingsError, load_settings


class ServiceSettings(Protocol):
    """What the shared CLI needs of a service's settings."""

    @property
    def is_production(self) -> bool: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_format(self) -> str: ...
    @property
    def http_host(self) -> str: ...
    @property
    def shutdown_drain_s(self) -> float: ...
    @property
    def shutdown_timeout_s(self) -> float: ...
    def dsn_for(self, database: str) -> str: ...


S = TypeVar("S", bound=ServiceSettings)
log = structlog.get_logger(__name__)
AddCommands = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
RunCommand = Callable[[S, argparse.Namespace], int]


@dataclass(frozen=True)
class ServiceCli(Generic[S]):
    name: str
    settings_cls: type[S]
    create_app: Callable[[S], web.Application]
    migrations: Sequence[tuple[str, Path]]
    database: Callable[[S], str]
    port: Callable[[S], int]
    serve_help: str = "run the HTTP API"
    extra_commands: dict[str, tuple[AddCommands, RunCommand[S]]] = field(default_factory=dict)


async def migrate(settings: ServiceSettings, database: str, migrations: Sequence[tuple[str, Path]]) -> None:
    if not settings.is_production:
        await ensure_database(settings.dsn_for("postgres"), database)
    applied = await migrate_dsn(settings.dsn_for(database), migrations)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


async def serve(
    app: web.Application, host: str, port: int, *, drain_s: float, shutdown_timeout_s: float
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then drain, finish requests in flight and clean up."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving", host=host, port=port)
        await stop.wait()
        start_draining(app)
        log.info("shutdown_started", drain_s=drain_s, shutdown_timeout_s=shutdown_timeout_s)
        await asyncio.sleep(drain_s)
    finally:
        # Closes the listener, waits for handlers in flight, then on_shutdown and cleanup_ctx.
        await runner.cleanup()
    log.info("shutdown_complete")


def main(cli: ServiceCli[S], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {cli.name}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help=cli.serve_help)
    serve_command.add_argument("--port", type=int, default=None)
    commands.add_parser("migrate", help="create the database if needed and apply migrations")
    for add, _ in cli.extra_commands.values():
        add(commands)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(cli.settings_cls)
        configure_logging(cli.name, settings.log_level, settings.log_format)
        if args.command == "serve":
            asyncio.run(
                serve(
                    cli.create_app(settings),
                    settings.http_host,
                    args.port or cli.port(settings),
                    drain_s=settings.shutdown_drain_s,
                    shutdown_timeout_s=settings.shutdown_timeout_s,
                )
            )
            return 0
        if args.command == "migrate":
            asyncio.run(migrate(settings, cli.database(settings), cli.migrations))
            return 0
        return cli.extra_commands[args.command][1](settings, args)
    except SettingsError as exc:
        print(f"{cli.name}: {exc}", file=sys.stderr)
        return 2
