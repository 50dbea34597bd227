"""``python -m notifier serve [--port N]`` | ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

from common.logging import configure_logging
from common.settings import SettingsError, load_settings
from notifier.settings import NotifierSettings


def _serve(settings: NotifierSettings, port: int | None) -> None:
    from notifier.app import create_app

    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=port or settings.notifier_port,
        access_log=None,
        print=None,
        shutdown_timeout=10,
    )


async def _migrate(settings: NotifierSettings) -> None:
    from common.migrations import ensure_database, migrate_dsn
    from notifier.app import MIGRATIONS

    if not settings.is_production:
        await ensure_database(settings.dsn_for("postgres"), settings.notification_db_name)
    applied = await migrate_dsn(settings.dsn, MIGRATIONS)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notifier")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--port", type=int, default=None)
    commands.add_parser("migrate", help="create the database if needed and apply migrations")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(NotifierSettings)
    except SettingsError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2
    configure_logging("notifier", settings.log_level, settings.log_format)
    if args.command == "serve":
        _serve(settings, args.port)
        return 0
    asyncio.run(_migrate(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
