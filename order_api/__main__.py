"""``python -m order_api serve [--port N]`` | ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

from common.logging import configure_logging
from common.settings import SettingsError, load_settings
from order_api.settings import Settings


def _serve(settings: Settings, port: int | None) -> None:
    from order_api.app import create_app

    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=port or settings.order_api_port,
        access_log=None,
        print=None,
        shutdown_timeout=10,
    )


async def _migrate(settings: Settings) -> None:
    from common.migrations import ensure_database, migrate_dsn
    from order_api.app import MIGRATIONS

    if not settings.is_production:
        await ensure_database(settings.dsn_for("postgres"), settings.order_db_name)
    applied = await migrate_dsn(settings.dsn, MIGRATIONS)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m order_api")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (and, unless disabled, the outbox relay)")
    serve.add_argument("--port", type=int, default=None)
    commands.add_parser("migrate", help="create the database if needed and apply migrations")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(Settings)
    except SettingsError as exc:
        print(f"order_api: {exc}", file=sys.stderr)
        return 2
    configure_logging("order_api", settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            _serve(settings, args.port)
        else:
            asyncio.run(_migrate(settings))
    except SettingsError as exc:
        print(f"order_api: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
