"""``python -m user_api serve [--port N]`` | ``migrate`` | ``create-admin EMAIL [--name NAME]``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from common.cli import ServiceCli, main
from user_api.admin import create_admin
from user_api.app import MIGRATIONS, create_app
from user_api.settings import Settings


def _add_create_admin(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = commands.add_parser("create-admin", help="create or promote an admin account")
    admin.add_argument("email")
    admin.add_argument("--name", default="Administrator")


def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    password = os.environ.get("ADMIN_PASSWORD") or ""
    if not password:
        if not sys.stdin.isatty():
            print("set ADMIN_PASSWORD or run in a terminal to be prompted", file=sys.stderr)
            return 2
        password = getpass.getpass("Password for the admin: ")
        if password != getpass.getpass("Repeat: "):
            print("the passwords differ", file=sys.stderr)
            return 2
    return asyncio.run(create_admin(settings, args.email, password, args.name))


CLI = ServiceCli(
    name="user_api",
    settings_cls=Settings,
    create_app=create_app,
    migrations=MIGRATIONS,
    database=lambda settings: settings.user_db_name,
    port=lambda settings: settings.user_api_port,
    extra_commands={"create-admin": (_add_create_admin, _create_admin)},
)

if __name__ == "__main__":
    sys.exit(main(CLI))
