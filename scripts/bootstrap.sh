#!/usr/bin/env bash
# Make this checkout runnable: the virtualenv with the package and its dev tools.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
ensure_venv
