# syntax=docker/dockerfile:1.7
# One image for the API (default command) and the jobs:
#   python -m feature_repo.pipeline.cli validate|apply|materialize
#   python -m training train
#   mlflow server ...            (the compose stack's tracking server: same MLflow as the clients)
# Built from uv.lock only. Runs as a numeric non-root user with a read-only root filesystem:
# everything that writes goes to /tmp (HOME, TMPDIR, MPLCONFIGDIR; MLflow downloads models
# into tempfile directories), /data (the Parquet offline store) or /mlartifacts (mlflow server).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: resolve the locked environment into /opt/venv --------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv

RUN pip install "uv==${UV_VERSION}"

WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
# Dependencies only (the project itself runs from /app via PYTHONPATH, so the Feast repo
# keeps its feature_store.yaml next to the code); every runtime dependency ships as a wheel.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# ---- runtime: the venv, the code, nothing else ----------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# CI passes the commit (the image has no .git, so training's model card says "unknown").
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="skewless" \
      org.opencontainers.image.description="Feature-store-centric online prediction: API and pipeline jobs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${VCS_REF}"

# libgomp1: LightGBM's OpenMP runtime (its wheel does not bundle it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

ARG UID=10001
ARG GID=10001
RUN groupadd --system --gid ${GID} skewless \
    && useradd --system --uid ${UID} --gid ${GID} --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin skewless \
    # Mount points a fresh named volume copies its ownership from.
    && mkdir -p /data /mlartifacts \
    && chown ${UID}:${GID} /data /mlartifacts

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY feature_repo/ /app/feature_repo/
COPY training/ /app/training/
COPY serving/ /app/serving/
COPY observability/ /app/observability/
# Both optimisation levels: the API runs with -O (serving.server), which reads *.opt-1.pyc and,
# with PYTHONDONTWRITEBYTECODE below, would otherwise recompile Feast, MLflow and the rest at
# every start. UV_COMPILE_BYTECODE wrote only the plain level for the venv.
RUN /opt/venv/bin/python -m compileall -q -j 0 -o 0 -o 1 /app \
    && /opt/venv/bin/python -m compileall -qq -j 0 -o 1 /opt/venv/lib

ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    SKEWLESS_REPO_PATH=/app/feature_repo \
    SKEWLESS_DATA_DIR=/data \
    MLFLOW_DISABLE_TELEMETRY=true

USER 10001:10001
# Run from the writable /tmp: libraries that write relative to the working directory (DuckDB
# spills to ./.tmp) then work on a read-only root. PYTHONSAFEPATH keeps /tmp off sys.path;
# the code is found through PYTHONPATH.
WORKDIR /tmp
EXPOSE 8000

# No curl in slim: ask /health with the standard library.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

# The production entry point: uvloop, httptools, no access log, and -O (see serving/server.py).
CMD ["python", "-O", "-m", "serving.server", "--host", "0.0.0.0", "--port", "8000"]
