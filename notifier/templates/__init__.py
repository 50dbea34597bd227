"""Rendering notification templates that ops edit on disk.

Layout under ``TEMPLATES_DIR`` (one folder per channel, one file per template and part)::

    samples/<name>.json          sample context: documents the variables, used by ``check``
    email/<name>.subject.txt     email/<name>.text.txt     email/<name>.html (optional)
    sms/<name>.txt
    push/<name>.title.txt        push/<name>.body.txt

Files starting with ``_`` are shared pieces (``{% extends "email/_layout.html" %}``).

Templates run in Jinja2's immutable sandbox with ``StrictUndefined`` (a misspelt variable is an
error, never an empty string); HTML parts are autoescaped, text parts are not. Values from the
context are data: a user named ``{{7*7}}`` is printed as typed, never evaluated. Jinja's
``auto_reload`` re-reads a file whose mtime changed, so edits apply without a restart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*){0,4}$")
SAMPLES_DIR = "samples"
# Subject lines and push titles end up in headers and lock screens: one line, bounded.
SINGLE_LINE_PARTS = frozenset({"subject", "title"})
MAX_SINGLE_LINE = 200


@dataclass(frozen=True)
class Part:
    name: str
    suffix: str
    required: bool = True


PARTS: dict[str, tuple[Part, ...]] = {
    "email": (
        Part("subject", ".subject.txt"),
        Part("text", ".text.txt"),
        Part("html", ".html", required=False),
    ),
    "sms": (Part("text", ".txt"),),
    "push": (Part("title", ".title.txt"), Part("body", ".body.txt")),
}


class TemplateProblem(Exception):
    """A template is missing, malformed or does not fit its context: permanent for that notification."""


@dataclass(frozen=True)
class Rendered:
    template: str
    channel: str
    parts: dict[str, str]


def single_line(text: str) -> str:
    """Collapse all whitespace, CR and LF included: nothing can start a new header line."""
    return " ".join(text.split())[:MAX_SINGLE_LINE]


def _template_line(exc: BaseException, filename: str) -> int | None:
    # Jinja rewrites tracebacks so template frames carry the template's file and line.
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(filename):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class TemplateRenderer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(folder),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            auto_reload=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def path_of(self, template: str, channel: str, part: Part) -> str:
        return f"{channel}/{template}{part.suffix}"

    def has(self, template: str, channel: str) -> bool:
        """Whether every required part of ``template`` exists for ``channel``."""
        if channel not in PARTS or not TEMPLATE_NAME_RE.match(template):
            return False
        return all(
            (self.folder / self.path_of(template, channel, part)).is_file()
            for part in PARTS[channel]
            if part.required
        )

    def render(self, template: str, channel: str, context: dict[str, Any]) -> Rendered:
        if channel not in PARTS:
            raise TemplateProblem(f"unknown channel {channel!r}")
        if not TEMPLATE_NAME_RE.match(template):
            raise TemplateProblem(f"{template!r} is not a template name")
        parts: dict[str, str] = {}
        for part in PARTS[channel]:
            path = self.path_of(template, channel, part)
            if not part.required and not (self.folder / path).is_file():
                continue
            text = self._render_file(path, context)
            parts[part.name] = single_line(text) if part.name in SINGLE_LINE_PARTS else text.strip()
            if part.required and not parts[part.name]:
                raise TemplateProblem(f"{path}: renders to nothing")
        return Rendered(template, channel, parts)

    def _render_file(self, path: str, context: dict[str, Any]) -> str:
        try:
            return self._env.get_template(path).render(context)
        except jinja2.TemplateNotFound:
            raise TemplateProblem(f"{path}: no such template in {self.folder}") from None
        except jinja2.TemplateSyntaxError as exc:
            where = exc.name or path
            raise TemplateProblem(f"{where} line {exc.lineno}: syntax error: {exc.message}") from None
        except Exception as exc:  # undefined variables, sandbox violations, filters on bad types
            line = _template_line(exc, path)
            where = f"{path} line {line}" if line else path
            message = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else str(exc)
            raise TemplateProblem(f"{where}: {type(exc).__name__}: {message}") from None

    def template_names(self) -> list[str]:
        """Templates are declared by their sample context: ``samples/<name>.json``."""
        folder = self.folder / SAMPLES_DIR
        if not folder.is_dir():
            return []
        return sorted(p.name.removesuffix(".json") for p in folder.glob("*.json"))

    def channels_of(self, template: str) -> list[str]:
        return [channel for channel in PARTS if self.has(template, channel)]

    def sample_context(self, template: str) -> dict[str, Any]:
        path = self.folder / SAMPLES_DIR / f"{template}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TemplateProblem(f"{SAMPLES_DIR}/{template}.json: {exc.strerror}") from None
        except ValueError as exc:
            raise TemplateProblem(f"{SAMPLES_DIR}/{template}.json: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise TemplateProblem(f"{SAMPLES_DIR}/{template}.json: must be a JSON object")
        return data

    def orphan_files(self) -> list[str]:
        """Template files that belong to no declared template (a typo in a file name, usually)."""
        expected = {
            self.path_of(name, channel, part)
            for name in self.template_names()
            for channel, parts in PARTS.items()
            for part in parts
        }
        orphans = []
        for channel in PARTS:
            folder = self.folder / channel
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                relative = f"{channel}/{path.name}"
                if path.is_file() and not path.name.startswith("_") and relative not in expected:
                    orphans.append(relative)
        return orphans

    def check(self) -> list[str]:
        """Render every template with its sample context; the problems found, empty if none."""
        problems = [f"{path}: no samples/<name>.json declares this template" for path in self.orphan_files()]
        names = self.template_names()
        if not names:
            problems.append(f"{self.folder}: no templates (no {SAMPLES_DIR}/*.json)")
        for name in names:
            if not TEMPLATE_NAME_RE.match(name):
                problems.append(f"{SAMPLES_DIR}/{name}.json: {name!r} is not a valid template name")
                continue
            try:
                context = self.sample_context(name)
            except TemplateProblem as exc:
                problems.append(str(exc))
                continue
            channels = [
                channel
                for channel, parts in PARTS.items()
                if any((self.folder / self.path_of(name, channel, part)).is_file() for part in parts)
            ]
            if not channels:
                problems.append(f"{name}: has a sample but no template in any channel")
            for channel in channels:
                try:
                    self.render(name, channel, context)
                except TemplateProblem as exc:
                    problems.append(str(exc))
        return problems
