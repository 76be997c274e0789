# syntax=docker/dockerfile:1
# One image for the operator and for the trainer and export Jobs it starts: the chart runs
# `python -m kubetune_operator`, the Jobs run `python -m kubetune_trainer.<entrypoint>`.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: resolve the locked environment into /app/.venv --------------------------------------
FROM ${PYTHON_IMAGE} AS build

# Pinned, and at least the version pyproject.toml's [tool.uv] required-version asks for.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Use the image's interpreter, never a downloaded one; the runtime stage has the same at the same path.
# Copy (not hardlink) out of the cache, and compile bytecode now: the root filesystem is read-only
# at run time, so Python could not write it later.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra trainer --no-install-project

# Then the project itself, installed (not linked) into the venv so the venv alone is the runtime.
COPY operator/ operator/
COPY trainer/ trainer/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra trainer --no-editable

# ---- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# A fixed non-root uid: the chart's securityContext (runAsUser 10001, runAsNonRoot) matches it.
RUN groupadd --system --gid 10001 kubetune \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin kubetune

# Owned by root and read-only for the operator's user.
COPY --from=build /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# The chart and the operator's Jobs set their command explicitly; this is for `docker run`.
CMD ["python", "-m", "kubetune_operator"]
