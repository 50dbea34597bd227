"""The command line every API service shares: ``python -m SERVICE serve [--port N] | migrate``.

A service describes itself once (``ServiceCli``); extra commands (user_api's ``create-admin``) plug
in beside the two common ones.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from aiohttp import web

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
    def dsn_for(self, database: str) -> str: ...


S = TypeVar("S", bound=ServiceSettings)
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


def main(cli: ServiceCli[S], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {cli.name}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help=cli.serve_help)
    serve.add_argument("--port", type=int, default=None)
    commands.add_parser("migrate", help="create the database if needed and apply migrations")
    for add, _ in cli.extra_commands.values():
        add(commands)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(cli.settings_cls)
        configure_logging(cli.name, settings.log_level, settings.log_format)
        if args.command == "serve":
            web.run_app(
                cli.create_app(settings),
                host=settings.http_host,
                port=args.port or cli.port(settings),
                access_log=None,
                print=None,
                shutdown_timeout=10,
            )
            return 0
        if args.command == "migrate":
            asyncio.run(migrate(settings, cli.database(settings), cli.migrations))
            return 0
        return cli.extra_commands[args.command][1](settings, args)
    except SettingsError as exc:
        print(f"{cli.name}: {exc}", file=sys.stderr)
        return 2
