"""Dead-letter tooling: ``python -m workers.dlq list | show ID | replay ID... | replay --all | purge --yes``.

``list`` and ``replay`` take the same filters (``--actor``, ``--error-type``, ``--since``);
``replay --dry-run`` says what it would do and does nothing; ``show`` prints one dead letter as
JSON (``--text``: readable, traceback last). What the queues hold and how a replay stays safe:
``workers.letters``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from common.events import DEAD_LETTER_QUEUES
from common.settings import RabbitSettings, SettingsError, load_settings
from workers.letters import (
    DEFAULT_MAX_REPLAYS,
    DeadLetter,
    DeadLetterQueues,
    ReplayReport,
    Selection,
    parse_time,
    replay_message,
)

__all__ = [
    "DeadLetter",
    "DeadLetterQueues",
    "ReplayReport",
    "Selection",
    "main",
    "parse_since",
    "replay_message",
]


def parse_since(text: str) -> datetime:
    """``30m``, ``2h``, ``1d``, ``90s`` ago, or an ISO 8601 time (UTC when no offset is given)."""
    relative = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if relative:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(relative.group(1))})
    parsed = parse_time(text.strip())
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not a duration (30m, 2h, 1d) or an ISO 8601 time: {text!r}")
    return parsed


def _when(letter: DeadLetter) -> str:
    died = letter.died_at
    return died.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if died else "?"


def _print_list(letters: list[DeadLetter]) -> None:
    if not letters:
        print("no dead letters")
        return
    print(
        f"{'QUEUE':<17} {'MESSAGE ID':<36}  {'ACTOR':<21} {'ATTEMPTS':>8} {'REPLAYS':>7}  "
        f"{'DIED (UTC)':<19}  ERROR"
    )
    for letter in letters:
        counts = f"{letter.attempts:>8} {letter.replays:>7}"
        print(
            f"{letter.queue:<17} {letter.id:<36}  {letter.actor:<21} {counts}  {_when(letter):<19}  "
            f"{letter.error[:120]}"
        )
    print(f"{len(letters)} dead letter(s)")


def _print_text(letter: DeadLetter) -> None:
    print(f"{letter.id}  {letter.actor}  in {letter.queue}")
    if letter.message is not None:
        print(f"args: {json.dumps(letter.message.args, default=str)[:500]}")
    for number, failure in enumerate(letter.failures, start=1):
        where = f"{failure.get('host', '?')} pid {failure.get('pid', '?')}"
        print(
            f"failure {number}: {failure.get('time', '?')}  {failure.get('reason', '?')}  "
            f"attempts {failure.get('attempts', '?')}  replays {failure.get('replays', '?')}  on {where}"
        )
        print(f"  {failure.get('type', '')}: {failure.get('message', '')}")
    record = letter.record
    if record and record.get("traceback"):
        print(str(record["traceback"]).rstrip())


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actor", help="only this actor (a glob: 'notifications.*')")
    parser.add_argument("--error-type", help="only this exception type (InvalidEvent or its full name)")
    parser.add_argument("--since", type=parse_since, help="only those that died since: 30m, 2h, 1d, ISO time")


def _selection(args: argparse.Namespace, ids: Iterable[str] | None = None) -> Selection:
    return Selection(
        ids=None if ids is None else frozenset(ids),
        actor=args.actor,
        error_type=args.error_type,
        since=args.since,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.dlq", description="Inspect and replay dead letters."
    )
    parser.add_argument(
        "--queue", action="append", help=f"dead-letter queue (default: {', '.join(DEAD_LETTER_QUEUES)})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list dead letters (they stay in the queue)")
    _add_filters(listing)
    show = commands.add_parser("show", help="print one dead letter as JSON, traceback included")
    show.add_argument("message_id")
    show.add_argument("--text", action="store_true", help="a readable report instead of JSON")
    replay = commands.add_parser("replay", help="republish to the original queue with retries reset")
    replay.add_argument("message_ids", nargs="*")
    replay.add_argument("--all", action="store_true", help="every dead letter present now (and matching)")
    replay.add_argument("--max-replays", type=int, default=DEFAULT_MAX_REPLAYS)
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed, change nothing")
    _add_filters(replay)
    purge = commands.add_parser("purge", help="delete every dead letter")
    purge.add_argument("--yes", action="store_true", help="really delete them")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(RabbitSettings)
    except SettingsError as exc:
        print(f"workers.dlq: {exc}", file=sys.stderr)
        return 2
    queues = DeadLetterQueues(settings.amqp_url, args.queue or DEAD_LETTER_QUEUES)

    if args.command == "list":
        _print_list(queues.list(_selection(args)))
        return 0
    if args.command == "show":
        letter = queues.find(args.message_id)
        if letter is None:
            print(f"no dead letter {args.message_id}", file=sys.stderr)
            return 1
        if args.text:
            _print_text(letter)
        else:
            print(json.dumps(letter.as_dict(), indent=2, default=str))
        return 0
    if args.command == "replay":
        if args.all == bool(args.message_ids):
            parser.error("replay takes message ids or --all, not both or neither")
        wanted = None if args.all else set(args.message_ids)
        report = queues.replay(_selection(args, wanted), max_replays=args.max_replays, dry_run=args.dry_run)
        verb = "would replay" if args.dry_run else "replayed"
        for message_id in report.replayed:
            print(f"{verb} {message_id}")
        for message_id, reason in report.refused:
            print(f"refused  {message_id}: {reason}", file=sys.stderr)
        missing = (wanted or set()) - set(report.replayed) - {i for i, _ in report.refused}
        for message_id in sorted(missing):
            print(
                f"missing  {message_id}: not in {', '.join(queues.queues)} (or filtered out)", file=sys.stderr
            )
        return 1 if report.refused or missing else 0
    if not args.yes:
        print("purge deletes every dead letter for good; add --yes to do it", file=sys.stderr)
        return 2
    for queue, count in queues.purge().items():
        print(f"purged {count} message(s) from {queue}")
    return 0


if __name__ == "__main__":
    try:
        exit_code = main()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own exit
    except BrokenPipeError:
        # ``show --text ID | head``: the reader has what it wanted; no traceback on stderr.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        exit_code = 1
    sys.exit(exit_code)
