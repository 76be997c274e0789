# syntax=docker/dockerfile:1
# Two images from one Dockerfile (see docs/install.md, "Images"):
#
#   operator  the Kopf operator only: no PyTorch, no CUDA. The chart's `image`. The last stage, so
#             also what a plain `docker build .` produces.
#   trainer   the trainer and export Jobs the operator starts: the `trainer` extra (PyTorch and its
#             CUDA wheels, transformers, onnxruntime). The chart's `trainerImage`.
#
#   docker build --target operator -t ghcr.io/kubetune/kubetune:0.1.0 .
#   docker build --target trainer -t ghcr.io/kubetune/kubetune-trainer:0.1.0 .
#
# The base image, at an exact version. No digest here: at release time resolve the tag's digest and
# pass it, e.g. --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm` prints it), or write it below.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build-base: uv, and the project's metadata ----------------------------------------------
FROM ${PYTHON_IMAGE} AS build-base

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
COPY pyproject.toml uv.lock README.md ./

# ---- build-operator: the operator's locked environment in /app/.venv, without the trainer extra --
FROM build-base AS build-operator

# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed (not linked) into the venv so the venv alone is the runtime.
# The wheel holds all three packages: the operator imports kubetune_trainer.config (pydantic only).
COPY operator/ operator/
COPY trainer/ trainer/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# The kubernetes client ships a second, asyncio copy of itself (kubernetes.aio, about 63 MB with
# its bytecode) that nothing here imports. Then check the result: the operator's modules import,
# and no ML stack slipped in through a dependency.
RUN rm -rf /app/.venv/lib/python3.11/site-packages/kubernetes/aio \
    && /app/.venv/bin/python -c "import kubetune_operator.__main__" \
    && /app/.venv/bin/python -c "import importlib.util as u, sys; \
sys.exit(' '.join(m for m in ('torch', 'transformers', 'onnxruntime') if u.find_spec(m)) or None)"

# ---- build-trainer: the same with the trainer extra -------------------------------------------
FROM build-base AS build-trainer

RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra trainer --no-install-project

COPY operator/ operator/
COPY trainer/ trainer/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra trainer --no-editable

# ---- runtime: what both images share -------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed non-root uid: the chart's securityContext (runAsUser 10001, runAsNonRoot) matches it.
RUN groupadd --system --gid 10001 kubetune \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin kubetune

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# ---- trainer -------------------------------------------------------------------------------------
FROM runtime AS trainer

LABEL org.opencontainers.image.title="kubetune-trainer" \
      org.opencontainers.image.description="Kubetune's trainer and export Jobs (PyTorch, CUDA)" \
      org.opencontainers.image.source="https://github.com/kubetune/kubetune" \
      org.opencontainers.image.licenses="Apache-2.0"

# Owned by root (COPY ignores USER) and read-only for the image's user.
COPY --from=build-trainer /app/.venv /app/.venv

# No CMD of its own (the base image's `python3`): the operator sets every Job's command, e.g.
# `python -m kubetune_trainer.train --config ...`.

# ---- operator (the default target) ---------------------------------------------------------------
FROM runtime AS operator

LABEL org.opencontainers.image.title="kubetune" \
      org.opencontainers.image.description="Kubetune's Kopf operator" \
      org.opencontainers.image.source="https://github.com/kubetune/kubetune" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build-operator /app/.venv /app/.venv

# The chart sets the command explicitly; this is for `docker run`.
CMD ["python", "-m", "kubetune_operator"]
