"""``python -m order_api serve [--port N]`` | ``migrate``."""

from __future__ import annotations

import sys

from common.cli import ServiceCli, main
from order_api.app import MIGRATIONS, create_app
from order_api.settings import Settings

CLI = ServiceCli(
    name="order_api",
    settings_cls=Settings,
    create_app=create_app,
    migrations=MIGRATIONS,
    database=lambda settings: settings.order_db_name,
    port=lambda settings: settings.order_api_port,
    serve_help="run the HTTP API (and, unless disabled, the outbox relay)",
)

if __name__ == "__main__":
    sys.exit(main(CLI))
