#!/usr/bin/env bash
# The lock files: every dependency of the application at one version, with the hashes of its
# files, compiled from setup.cfg by uv for Python 3.11 on every platform:
#   requirements/runtime.txt   install_requires: what the image installs (Dockerfile)
#   requirements/dev.txt       the same versions plus the dev extra: what ensure_venv installs
# Both are installed with `pip install --require-hashes`: a file that changed on the index, or a
# dependency that is not in the lock, stops the install.
#
#   scripts/lock.sh                    after editing setup.cfg: add what is new, keep every other pin
#   scripts/lock.sh --upgrade          move every pin to the newest release setup.cfg allows
#   scripts/lock.sh --upgrade-package aiohttp   move one (any other uv pip compile option passes through)
#   scripts/lock.sh --check            compile again in a temporary folder and compare (CI, tests):
#                                      exit 1, naming the difference, when the lock is not current
#   scripts/lock.sh --covers           offline: does the lock hold every requirement of setup.cfg at
#                                      a version it allows? (ensure_venv asks before trusting the lock)
# Needs the index (PyPI) except for --covers. Renovate runs the same compile (renovate.json).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

LOCK_DIR=requirements
# The interpreter the image and the hosts run; the markers keep the lock valid on every platform.
COMPILE=(pip compile --universal --python-version 3.11 --generate-hashes --quiet)

uv_bin() {
  if [ ! -x "$VENV/bin/uv" ]; then
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install -q uv >/dev/null || die "could not install uv into $VENV"
  fi
  echo "$VENV/bin/uv"
}

compile() { # output-dir [uv options...]
  local out=$1 uv
  shift
  uv=$(uv_bin)
  # The header keeps uv's own command line: Renovate's pip-compile manager re-runs it.
  "$uv" "${COMPILE[@]}" "$@" setup.cfg -o "$out/runtime.txt"
  "$uv" "${COMPILE[@]}" "$@" --extra dev -c "$out/runtime.txt" setup.cfg -o "$out/dev.txt"
}

requirements_only() { # file: the pins and hashes, without comments (which name the folder)
  grep -v '^[[:space:]]*#' "$1" | grep -v '^[[:space:]]*$'
}

covers() {
  "$PY" - "$LOCK_DIR/runtime.txt" "$LOCK_DIR/dev.txt" <<'PY'
"""Every requirement of setup.cfg is pinned at a version it allows: install_requires in both locks,
the dev extra in dev.txt. Offline and quick: ensure_venv asks this before trusting the lock."""

import configparser
import re
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

setup = configparser.ConfigParser()
setup.read("setup.cfg")


def wanted(section: str, key: str) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in setup[section][key].splitlines())
    return [Requirement(line) for line in lines if line]


def pins(path: str) -> dict[str, str]:
    found = {}
    for line in open(path):
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


runtime = wanted("options", "install_requires")
problems = []
for lock, requirements in ((sys.argv[1], runtime), (sys.argv[2], runtime + wanted("options.extras_require", "dev"))):
    pinned_in = pins(lock)
    for requirement in requirements:
        pinned = pinned_in.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not in {lock}")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}=={pinned} in {lock} does not satisfy {requirement}")
for problem in problems:
    print(f"    {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

case "${1:-}" in
  --check)
    shift
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Start from the committed pins, as a refresh would: a newer release on the index is not
    # a stale lock; a requirement added to (or changed in) setup.cfg without a new lock is.
    cp "$LOCK_DIR/runtime.txt" "$LOCK_DIR/dev.txt" "$tmp/"
    compile "$tmp" "$@"
    stale=0
    for name in runtime.txt dev.txt; do
      if ! diff -u --label "$LOCK_DIR/$name (committed)" --label "$LOCK_DIR/$name (compiled now)" \
        <(requirements_only "$LOCK_DIR/$name") <(requirements_only "$tmp/$name") >&2; then
        stale=1
      fi
    done
    [ $stale -eq 0 ] || die "the lock is not current with setup.cfg: run scripts/lock.sh and commit requirements/"
    info "requirements/runtime.txt and requirements/dev.txt are current with setup.cfg"
    ;;
  --covers)
    [ -x "$PY" ] || die "no virtualenv at $VENV"
    covers || { warn "requirements/dev.txt is behind setup.cfg (scripts/lock.sh regenerates it)"; exit 1; }
    ;;
  *)
    mkdir -p "$LOCK_DIR"
    step "compiling $LOCK_DIR/runtime.txt and $LOCK_DIR/dev.txt from setup.cfg"
    compile "$LOCK_DIR" "$@"
    info "$(grep -c '^[A-Za-z0-9].*==' "$LOCK_DIR/runtime.txt") runtime and $(grep -c '^[A-Za-z0-9].*==' "$LOCK_DIR/dev.txt") development packages pinned with hashes"
    info "commit requirements/ with the setup.cfg change"
    ;;
esac
