"""``python -m notifier serve [--port N]`` | ``migrate``."""

from __future__ import annotations

import sys

from common.cli import ServiceCli, main
from notifier.app import MIGRATIONS, create_app
from notifier.settings import NotifierSettings

CLI = ServiceCli(
    name="notifier",
    settings_cls=NotifierSettings,
    create_app=create_app,
    migrations=MIGRATIONS,
    database=lambda settings: settings.notification_db_name,
    port=lambda settings: settings.notifier_port,
)

if __name__ == "__main__":
    sys.exit(main(CLI))
