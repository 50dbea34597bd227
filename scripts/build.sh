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

if [ "${PUSH:-0}" = 1 ]; then
  step "pushing $image:$version"
  docker push "$image:$version"
  if [ "${TAG_LATEST:-0}" = 1 ]; then docker push "$image:latest"; fi
fi
echo "$image:$version"
