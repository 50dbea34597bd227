"""Rendering notification templates that ops edit on disk, reloaded all-or-nothing.

Layout under ``TEMPLATES_DIR`` (one folder per channel, one file per template and part)::

    samples/<name>.json          sample context: declares the template, documents its variables
    email/<name>.subject.txt     email/<name>.text.txt     email/<name>.html (optional)
    sms/<name>.txt
    push/<name>.title.txt        push/<name>.body.txt

Files starting with ``_`` are shared pieces (``{% extends "email/_layout.html" %}``).

Templates run in Jinja2's immutable sandbox with ``StrictUndefined`` (a misspelt variable is an
error, never an empty string); HTML parts are autoescaped, text parts are not. Values from the
context are data: a user named ``{{7*7}}`` is printed as typed, never evaluated.

Edits apply without a restart, but only whole: ``reload`` reads the folder into a new
``TemplateSet`` and swaps it in only if every template of every channel renders with its sample
(``python -m notifier.templates check`` runs the same check). Otherwise the last good set keeps
serving, the problem is logged with its file and line, and ``templates_last_reload_ok`` is 0.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from notifier.templates.snapshot import (
    MAX_SINGLE_LINE,
    PARTS,
    SAMPLES_DIR,
    SINGLE_LINE_PARTS,
    TEMPLATE_NAME_RE,
    Part,
    Rendered,
    TemplateProblem,
    TemplateSet,
    path_of,
    scan,
    single_line,
)

__all__ = [
    "MAX_SINGLE_LINE",
    "PARTS",
    "SAMPLES_DIR",
    "SINGLE_LINE_PARTS",
    "TEMPLATE_NAME_RE",
    "Part",
    "ReloadResult",
    "Rendered",
    "TemplateProblem",
    "TemplateRenderer",
    "TemplateSet",
    "single_line",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReloadMetrics:
    ok: Gauge
    reloads: Counter
    last_good: Gauge


@functools.cache
def reload_metrics() -> ReloadMetrics:
    """Created on first use, not at import: in the workers' multiprocess mode a metric without
    labels opens its file when created, and ``python -m workers`` imports this module before it
    has prepared the directory."""
    return ReloadMetrics(
        # Worker processes share metrics through files: "livemin" reads 0 if any live process
        # rejected the folder's current version, and forgets processes that have exited.
        ok=Gauge(
            "templates_last_reload_ok",
            "1 if the templates folder as it is now was loaded; 0 if it was rejected and the last "
            "good set serves",
            multiprocess_mode="livemin",
        ),
        reloads=Counter("templates_reloads_total", "Template folder versions seen, by outcome", ["outcome"]),
        last_good=Gauge(
            "templates_last_good_reload_timestamp_seconds",
            "When the template set now serving was loaded",
            multiprocess_mode="livemax",
        ),
    )


@dataclass(frozen=True)
class ReloadResult:
    changed: bool  # the folder differed from what was last looked at
    loaded: bool  # a new set now serves
    problems: tuple[TemplateProblem, ...]


class TemplateRenderer:
    """Renders with the current ``TemplateSet``; ``reload`` swaps in a new one if it checks clean.

    At start the folder is loaded as it is, problems or not (there is nothing better to serve);
    ``ok`` is then False until a clean version is loaded.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._scanned = scan(folder)
        self._current = TemplateSet.load(folder)
        self._rejected: str | None = None  # fingerprint of the version last rejected
        self._problems = tuple(self._current.check())
        reload_metrics().reloads.labels("loaded" if not self._problems else "loaded_with_problems").inc()
        self._record(loaded=True)

    @property
    def current(self) -> TemplateSet:
        return self._current

    @property
    def fingerprint(self) -> str:
        return self._current.fingerprint

    @property
    def ok(self) -> bool:
        """Whether the folder as last looked at checked clean (and is what serves)."""
        return not self._problems

    @property
    def problems(self) -> tuple[TemplateProblem, ...]:
        return self._problems

    def reload(self, *, reread: bool = False) -> ReloadResult:
        """Look at the folder; load it if it changed and every template renders with its sample.

        A change is seen by name, mtime and size; ``reread`` compares the contents as well (two
        saves of the same size within the file system's mtime granularity look alike).
        """
        scanned = scan(self.folder)
        if scanned == self._scanned and not reread:
            return ReloadResult(changed=False, loaded=False, problems=self._problems)
        self._scanned = scanned
        candidate = TemplateSet.load(self.folder)
        if candidate.fingerprint == self._current.fingerprint and not self._problems:
            return ReloadResult(changed=False, loaded=False, problems=())  # touched, not changed
        if candidate.fingerprint == self._rejected:
            return ReloadResult(changed=False, loaded=False, problems=self._problems)  # said already
        problems = tuple(candidate.check())
        self._problems = problems
        self._rejected = candidate.fingerprint if problems else None
        if problems:
            reload_metrics().reloads.labels("rejected").inc()
            first = problems[0]
            log.error(
                "templates_reload_rejected",
                template_file=first.file,
                template_line=first.line,
                error=str(first),
                problems=[str(problem) for problem in problems],
                folder=str(self.folder),
                serving=self._current.fingerprint[:12],
            )
            self._record(loaded=False)
            return ReloadResult(changed=True, loaded=False, problems=problems)
        previous = self._current.fingerprint
        self._current = candidate
        reload_metrics().reloads.labels("loaded").inc()
        log.info(
            "templates_reloaded",
            folder=str(self.folder),
            previous=previous[:12],
            serving=candidate.fingerprint[:12],
            templates=len(candidate.template_names()),
        )
        self._record(loaded=True)
        return ReloadResult(changed=True, loaded=True, problems=())

    def _record(self, *, loaded: bool) -> None:
        metrics = reload_metrics()
        metrics.ok.set(0 if self._problems else 1)
        if loaded:
            metrics.last_good.set(time.time())
        if self._problems and loaded:
            first = self._problems[0]
            log.error(
                "templates_loaded_with_problems",
                template_file=first.file,
                template_line=first.line,
                error=str(first),
                problems=[str(problem) for problem in self._problems],
                folder=str(self.folder),
            )

    # What the current set says; see ``TemplateSet``.
    def path_of(self, template: str, channel: str, part: Part) -> str:
        return path_of(template, channel, part)

    def has(self, template: str, channel: str) -> bool:
        return self._current.has(template, channel)

    def render(self, template: str, channel: str, context: dict[str, Any]) -> Rendered:
        return self._current.render(template, channel, context)

    def template_names(self) -> list[str]:
        return self._current.template_names()

    def channels_of(self, template: str) -> list[str]:
        return self._current.channels_of(template)

    def sample_context(self, template: str) -> dict[str, Any]:
        return self._current.sample_context(template)

    def check(self) -> list[TemplateProblem]:
        """The problems of the folder as it is on disk now (what a reload would decide on)."""
        return TemplateSet.load(self.folder).check()
