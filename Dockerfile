# syntax=docker/dockerfile:1
# PatchPilot image: `patchpilot bot` (Slack bot + embedded Temporal worker) by default; any other
# command as arguments, e.g. `docker run ... patchpilot worker` or `... patchpilot config check`.
#   docker build -t patchpilot .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the locked dependencies and the project, into a venv of their own --------------------
FROM ${PYTHON_IMAGE} AS build
# Same uv release as CI (tools/dev.py), pinned: the lock file is read by the version that wrote it.
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/patchpilot
WORKDIR /src
# Dependencies first, from uv.lock only: a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY bot ./bot
COPY workflows ./workflows
COPY activities ./activities
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

# ---- runtime: the venv, OpenSSH's client tools, an unprivileged user ----------------------------
FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 patchpilot \
    && useradd --system --uid 10001 --gid patchpilot --home-dir /home/patchpilot --create-home \
       --shell /usr/sbin/nologin patchpilot \
    && mkdir -p /data /etc/patchpilot \
    && chown patchpilot:patchpilot /data
COPY --from=build /opt/patchpilot /opt/patchpilot
ENV PATH=/opt/patchpilot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PATCHPILOT_DATA_DIR=/data \
    PATCHPILOT_INVENTORY=/etc/patchpilot/inventory.yml \
    PATCHPILOT_KNOWN_HOSTS=/etc/patchpilot/known_hosts
USER patchpilot
WORKDIR /home/patchpilot
VOLUME ["/data"]
# Slack HTTP mode (PATCHPILOT_HTTP_PORT, default 3000); Socket Mode needs no inbound port.
EXPOSE 3000
# Healthy while Temporal answers and the namespace exists (a few seconds at most).
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["patchpilot", "config", "check", "--only", "temporal", "--timeout", "5"]
ENTRYPOINT ["patchpilot"]
CMD ["bot"]
