"""``python -m notifier serve [--port N]`` | ``migrate`` | ``resend ID… | --status … [filters]``."""

from __future__ import annotations

import sys

from common.cli import ServiceCli, main
from notifier.app import MIGRATIONS, create_app
from notifier.resend_cli import add_resend_command, run_resend
from notifier.settings import NotifierSettings

CLI = ServiceCli(
    name="notifier",
    settings_cls=NotifierSettings,
    create_app=create_app,
    migrations=MIGRATIONS,
    database=lambda settings: settings.notification_db_name,
    port=lambda settings: settings.notifier_port,
    extra_commands={"resend": (add_resend_command, run_resend)},
)

if __name__ == "__main__":
    sys.exit(main(CLI))
