"""One version of the templates folder, read into memory: rendered from, checked, swapped whole.

A ``TemplateSet`` never looks at the disk again once loaded, so an edit saved on disk changes
nothing until a reload has checked the new version and swapped it in (``TemplateRenderer``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from common.errors import ServiceError

TEMPLATE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*){0,4}$")
SAMPLES_DIR = "samples"
# Subject lines and push titles end up in headers and lock screens: one line, bounded.
SINGLE_LINE_PARTS = frozenset({"subject", "title"})
MAX_SINGLE_LINE = 200
# Bigger files are not templates someone meant to write; refusing them bounds what a reload reads.
MAX_FILE_BYTES = 256 * 1024


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
FOLDERS = (SAMPLES_DIR, *PARTS)


class TemplateProblem(ServiceError):
    """A template is missing, malformed or does not fit its context.

    ``file`` (relative to the templates folder) and ``line`` say where, when known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TemplateProblem) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


@dataclass(frozen=True)
class Rendered:
    template: str
    channel: str
    parts: dict[str, str]


def single_line(text: str) -> str:
    """Collapse all whitespace, CR and LF included: nothing can start a new header line."""
    return " ".join(text.split())[:MAX_SINGLE_LINE]


def path_of(template: str, channel: str, part: Part) -> str:
    return f"{channel}/{template}{part.suffix}"


def _template_line(exc: BaseException, filename: str) -> int | None:
    # Jinja rewrites tracebacks so template frames carry the template's file and line.
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(filename):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class _SnapshotLoader(jinja2.BaseLoader):
    """Serves the sources read at load time; the file name keeps tracebacks pointing at the file."""

    def __init__(self, folder: Path, sources: Mapping[str, str]) -> None:
        self._folder = folder
        self._sources = sources

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self._sources or template.startswith(f"{SAMPLES_DIR}/"):
            raise jinja2.TemplateNotFound(template)
        return self._sources[template], str(self._folder / template), lambda: True


def scan(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What is on disk, cheaply (name, mtime, size): a reload reads the files only if this changed."""
    entries = []
    for sub in FOLDERS:
        directory = folder / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            try:
                stat = path.stat()
            except OSError:
                continue  # removed between listing and stat: the next scan sees it gone
            if path.is_file():
                entries.append((f"{sub}/{path.name}", stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


@dataclass(frozen=True)
class TemplateSet:
    folder: Path
    files: Mapping[str, str]
    # Problems met while reading (unreadable file, not UTF-8); ``check`` reports them first.
    read_problems: tuple[TemplateProblem, ...] = ()
    fingerprint: str = field(init=False)
    _env: ImmutableSandboxedEnvironment = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name].encode() + b"\0")
        object.__setattr__(self, "fingerprint", digest.hexdigest())
        env = ImmutableSandboxedEnvironment(
            loader=_SnapshotLoader(self.folder, self.files),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        object.__setattr__(self, "_env", env)

    @classmethod
    def load(cls, folder: Path) -> TemplateSet:
        files: dict[str, str] = {}
        problems = []
        for name, _, size in scan(folder):
            if size > MAX_FILE_BYTES:
                problems.append(TemplateProblem(f"{name}: larger than {MAX_FILE_BYTES} bytes", file=name))
                continue
            try:
                files[name] = (folder / name).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                problems.append(TemplateProblem(f"{name}: not UTF-8 text ({exc.reason})", file=name))
            except OSError as exc:
                problems.append(TemplateProblem(f"{name}: cannot be read: {exc.strerror}", file=name))
        return cls(folder, files, tuple(problems))

    def has(self, template: str, channel: str) -> bool:
        """Whether every required part of ``template`` exists for ``channel``."""
        if channel not in PARTS or not TEMPLATE_NAME_RE.match(template):
            return False
        return all(path_of(template, channel, part) in self.files for part in PARTS[channel] if part.required)

    def render(self, template: str, channel: str, context: dict[str, Any]) -> Rendered:
        if channel not in PARTS:
            raise TemplateProblem(f"unknown channel {channel!r}")
        if not TEMPLATE_NAME_RE.match(template):
            raise TemplateProblem(f"{template!r} is not a template name")
        parts: dict[str, str] = {}
        for part in PARTS[channel]:
            path = path_of(template, channel, part)
            if not part.required and path not in self.files:
                continue
            text = self._render_file(path, context)
            parts[part.name] = single_line(text) if part.name in SINGLE_LINE_PARTS else text.strip()
            if part.required and not parts[part.name]:
                raise TemplateProblem(f"{path}: renders to nothing", file=path)
        return Rendered(template, channel, parts)

    def _render_file(self, path: str, context: dict[str, Any]) -> str:
        try:
            return self._env.get_template(path).render(context)
        except jinja2.TemplateNotFound as exc:
            missing = exc.name if isinstance(exc.name, str) else path
            raise TemplateProblem(f"{missing}: no such template in {self.folder}", file=missing) from None
        except jinja2.TemplateSyntaxError as exc:
            where = exc.name or path
            raise TemplateProblem(
                f"{where} line {exc.lineno}: syntax error: {exc.message}", file=where, line=exc.lineno
            ) from None
        except Exception as exc:  # undefined variables, sandbox violations, filters on bad types
            line = _template_line(exc, path)
            where = f"{path} line {line}" if line else path
            message = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else str(exc)
            raise TemplateProblem(f"{where}: {type(exc).__name__}: {message}", file=path, line=line) from None

    def template_names(self) -> list[str]:
        """Templates are declared by their sample context: ``samples/<name>.json``."""
        prefix = f"{SAMPLES_DIR}/"
        return sorted(
            name.removeprefix(prefix).removesuffix(".json")
            for name in self.files
            if name.startswith(prefix) and name.endswith(".json")
        )

    def channels_of(self, template: str) -> list[str]:
        return [channel for channel in PARTS if self.has(template, channel)]

    def sample_context(self, template: str) -> dict[str, Any]:
        name = f"{SAMPLES_DIR}/{template}.json"
        if name not in self.files:
            raise TemplateProblem(f"{name}: no such sample in {self.folder}", file=name)
        try:
            data = json.loads(self.files[name])
        except ValueError as exc:
            line = getattr(exc, "lineno", None)
            raise TemplateProblem(f"{name}: not valid JSON: {exc}", file=name, line=line) from None
        if not isinstance(data, dict):
            raise TemplateProblem(f"{name}: must be a JSON object", file=name)
        return data

    def orphan_files(self) -> list[str]:
        """Template files that belong to no declared template (a typo in a file name, usually)."""
        expected = {
            path_of(name, channel, part)
            for name in self.template_names()
            for channel, parts in PARTS.items()
            for part in parts
        }
        return sorted(
            name
            for name in self.files
            if not name.startswith(f"{SAMPLES_DIR}/")
            and not name.rpartition("/")[2].startswith("_")
            and name not in expected
        )

    def check(self) -> list[TemplateProblem]:
        """Render every template of every channel with its sample context; the problems found."""
        problems = list(self.read_problems)
        problems += [
            TemplateProblem(f"{path}: no samples/<name>.json declares this template", file=path)
            for path in self.orphan_files()
        ]
        names = self.template_names()
        if not names:
            problems.append(TemplateProblem(f"{self.folder}: no templates (no {SAMPLES_DIR}/*.json)"))
        for name in names:
            if not TEMPLATE_NAME_RE.match(name):
                sample = f"{SAMPLES_DIR}/{name}.json"
                problems.append(
                    TemplateProblem(f"{sample}: {name!r} is not a valid template name", file=sample)
                )
                continue
            try:
                context = self.sample_context(name)
            except TemplateProblem as exc:
                problems.append(exc)
                continue
            channels = [
                channel
                for channel, parts in PARTS.items()
                if any(path_of(name, channel, part) in self.files for part in parts)
            ]
            if not channels:
                problems.append(TemplateProblem(f"{name}: has a sample but no template in any channel"))
            for channel in channels:
                try:
                    self.render(name, channel, context)
                except TemplateProblem as exc:
                    problems.append(exc)
        return problems
