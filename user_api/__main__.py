"""``python -m user_api serve [--port N]`` | ``migrate`` | ``create-admin EMAIL``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from aiohttp import web

from common.logging import configure_logging
from common.settings import SettingsError, load_settings
from user_api.settings import Settings


def _serve(settings: Settings, port: int | None) -> None:
    from user_api.app import create_app

    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=port or settings.user_api_port,
        access_log=None,
        print=None,
        shutdown_timeout=10,
    )


async def _migrate(settings: Settings) -> None:
    from common.migrations import ensure_database, migrate_dsn
    from user_api.app import MIGRATIONS

    if not settings.is_production:
        await ensure_database(settings.dsn_for("postgres"), settings.user_db_name)
    applied = await migrate_dsn(settings.dsn, MIGRATIONS)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


async def _create_admin(settings: Settings, email: str, name: str) -> int:
    from user_api.admin import create_admin

    password = os.environ.get("ADMIN_PASSWORD") or ""
    if not password:
        if not sys.stdin.isatty():
            print("set ADMIN_PASSWORD or run in a terminal to be prompted", file=sys.stderr)
            return 2
        password = getpass.getpass("Password for the admin: ")
        if password != getpass.getpass("Repeat: "):
            print("the passwords differ", file=sys.stderr)
            return 2
    return await create_admin(settings, email, password, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m user_api")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--port", type=int, default=None)
    commands.add_parser("migrate", help="create the database if needed and apply migrations")
    admin = commands.add_parser("create-admin", help="create or promote an admin account")
    admin.add_argument("email")
    admin.add_argument("--name", default="Administrator")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(Settings)
    except SettingsError as exc:
        print(f"user_api: {exc}", file=sys.stderr)
        return 2
    configure_logging("user_api", settings.log_level, settings.log_format)
    if args.command == "serve":
        try:
            _serve(settings, args.port)
        except SettingsError as exc:
            print(f"user_api: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    return asyncio.run(_create_admin(settings, args.email, args.name))


if __name__ == "__main__":
    sys.exit(main())
