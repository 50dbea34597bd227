# syntax=docker/dockerfile:1.7
# One image for every Python process of the system; the command picks which one runs:
#   python -m user_api serve | python -m order_api serve | python -m notifier serve
#   python -m workers | python -m notifier.fake_provider | python -m gateway_conf.render ...
# Build: scripts/build.sh (or docker compose build). See docs/deployment.md.

# Pinned by digest (Renovate moves the tag and the digest together; renovate.json). The digest is
# python:3.11-slim-bookworm's multi-platform index as docker-library/repo-info recorded it.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

# --- builder: compilers and headers, only to turn every dependency into a wheel -------------
FROM ${PYTHON_IMAGE} AS builder
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, from the lock alone, so a code change reuses this layer: every file pip
# downloads is checked against the hashes in requirements/runtime.txt (scripts/lock.sh).
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements/runtime.txt
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY common ./common
COPY user_api ./user_api
COPY order_api ./order_api
COPY notifier ./notifier
COPY workers ./workers
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: the interpreter, the wheels, nothing to compile with ---------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="microservices-app" \
      org.opencontainers.image.description="user_api, order_api, notifier and the Dramatiq workers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    APP_ENV=production \
    HTTP_HOST=0.0.0.0 \
    TZ=UTC \
    HEALTHCHECK_URL=http://127.0.0.1:8081/health \
    APP_VERSION=${VERSION}
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
# The wheels are mounted for the install only, so they never become a layer of this image. They
# were hash-checked when the builder downloaded them; nothing is resolved here, and `pip check`
# fails the build if the lock lacks a requirement of setup.cfg.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl \
    && pip check
WORKDIR /app
COPY --chown=root:root templates ./templates
COPY --chown=root:root gateway_conf ./gateway_conf
COPY --chown=root:root docker/healthcheck.py ./docker/healthcheck.py
# Writable by the app only where it must write: development JWT keys, the gateway's rendered
# configuration and development certificate (named volumes are seeded with this ownership).
RUN mkdir -p /app/var/keys /etc/gateway/conf /etc/gateway/tls \
    && chown -R app:app /app/var /etc/gateway \
    && chmod 0700 /app/var/keys
USER 10001:10001
EXPOSE 8081 8082 8083 9191
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "user_api", "serve"]
