# FlowForge: one image for the coordinator, the agents and the CLI (see compose.yaml).
#
#   docker build -t flowforge .
#   docker run --rm flowforge flowforge-agent --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLOWFORGE_DATA_DIR=/data

# Install from a build directory that is then removed: the agent refuses to start when its
# working directory holds its own `coordinator`, `agent`, ... packages beside the
# installed ones (they would shadow them), so the sources must not stay in /app.
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && cd / && rm -rf /src \
    && useradd --system --create-home --uid 10001 --user-group flowforge \
    && mkdir -p /app /data \
    && chown flowforge:flowforge /data

# The working directory is on the agent's import path: `--import examples.seed_pipelines`
# resolves here. Mount or copy your own flow modules beside it.
WORKDIR /app
COPY examples/ examples/

# /data is owned by the user, so a named volume first mounted there starts out writable.
USER flowforge

CMD ["flowforge-coordinator", "--help"]
