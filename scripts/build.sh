#!/usr/bin/env bash
# Build the application image (one image for user_api, order_api, notifier, the workers, the
# fake provider and the gateway's renderer) and tag it.
#   ./scripts/build.sh [VERSION]
# VERSION defaults to the commit (12 hex digits, "-dirty" when the work tree has changes); it is
# also what `deploy.sh staging|production VERSION` and the compose files call IMAGE_TAG.
# Environment:
#   IMAGE_NAME   repository to tag, registry included to push (default microservices-app)
#   TAG_LATEST=1 also tag IMAGE_NAME:latest
#   PUSH=1       push the tag(s) after building (log in to the registry first)
#   SBOM_DIR     where the image's SBOM goes (default dist/): NAME-VERSION.cdx.json, CycloneDX
#                1.6 JSON listing every Python package the image installs (requirements/runtime.txt:
#                versions, package URLs, hashes), validated against the CycloneDX schema
# The last line printed is the image reference, for a pipeline to pick up.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

version=${1:-}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -z "$version" ]; then
  version=$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    version="$version-dirty"
  fi
fi
# Docker's tag grammar; anything else would fail half-way through the pipeline.
[[ "$version" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not a valid image tag: '$version'"
image="${IMAGE_NAME:-microservices-app}"
command -v docker >/dev/null || die "docker is not installed"

tags=(-t "$image:$version")
[ "${TAG_LATEST:-0}" = 1 ] && tags+=(-t "$image:latest")

step "building $image:$version (revision $revision)"
DOCKER_BUILDKIT=1 docker build \
  --target runtime \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$revision" \
  --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "${tags[@]}" \
  .

# The image installs exactly the lock (Dockerfile: pip wheel --require-hashes -r requirements/runtime.txt,
# then pip check), so the lock is the inventory of its Python packages.
sbom_dir="${SBOM_DIR:-$ROOT/dist}"
sbom="$sbom_dir/${image##*/}-$version.cdx.json"
step "SBOM $sbom"
ensure_venv
mkdir -p "$sbom_dir"
component=$(mktemp)
trap 'rm -f "$component"' EXIT
# The root component (PEP 621 fields, as cyclonedx-py reads them), from setup.cfg.
printf '[project]\nname = "%s"\nversion = "%s"\nlicense = "%s"\n' \
  "$(sed -n 's/^name = //p' setup.cfg)" "$(sed -n 's/^version = //p' setup.cfg)" \
  "$(sed -n 's/^license = //p' setup.cfg)" >"$component"
PYTHONWARNINGS=ignore::UserWarning "$VENV/bin/cyclonedx-py" requirements requirements/runtime.txt \
  --pyproject "$component" --mc-type application --output-reproducible --of JSON -o "$sbom" ||
  die "cyclonedx-py could not write the SBOM"

if [ "${PUSH:-0}" = 1 ]; then
  step "pushing $image:$version"
  docker push "$image:$version"
  if [ "${TAG_LATEST:-0}" = 1 ]; then docker push "$image:latest"; fi
fi
echo "$image:$version"
