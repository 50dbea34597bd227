"""``python -m notifier.templates check`` | ``render TEMPLATE CHANNEL [--context FILE]``.

``check`` renders every template of every channel with its sample context and exits non-zero on
any problem: it is the very check a running notifier or worker makes before it loads an edited
folder (the pre-commit hook and CI run it too). ``render`` prints a preview of one template.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.settings import SettingsError, load_settings
from notifier.settings import CHANNELS, NotificationSettings
from notifier.templates import TemplateProblem, TemplateSet


def _check(templates: TemplateSet) -> int:
    problems = templates.check()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {templates.folder}", file=sys.stderr)
        return 1
    names = templates.template_names()
    for name in names:
        print(f"ok  {name}: {', '.join(templates.channels_of(name))}")
    print(f"{len(names)} template(s) render with their sample context")
    return 0


def _render(templates: TemplateSet, template: str, channel: str, context_file: Path | None) -> int:
    try:
        if context_file is None:
            context = templates.sample_context(template)
        else:
            context = json.loads(context_file.read_text(encoding="utf-8"))
        rendered = templates.render(template, channel, context)
    except (TemplateProblem, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for part, text in rendered.parts.items():
        print(f"----- {part} -----")
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notifier.templates")
    parser.add_argument("--dir", type=Path, default=None, help="templates folder (default: TEMPLATES_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="render every template with its sample context")
    render = commands.add_parser("render", help="print a preview of one template")
    render.add_argument("template", help="template name, e.g. order.created")
    render.add_argument("channel", choices=CHANNELS)
    render.add_argument("--context", type=Path, default=None, help="JSON context (default: the sample)")
    args = parser.parse_args(argv)
    try:
        folder = args.dir or load_settings(NotificationSettings).templates_dir
    except SettingsError as exc:
        print(f"notifier.templates: {exc}", file=sys.stderr)
        return 2
    templates = TemplateSet.load(folder)
    if args.command == "check":
        return _check(templates)
    return _render(templates, args.template, args.channel, args.context)


if __name__ == "__main__":
    sys.exit(main())
