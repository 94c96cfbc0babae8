# hub-server in a container: docs/deployment.md explains how to run it, alone or as several
# nodes on one Redis (docker-compose.yml).
#
#   docker build -t hub .
#   docker run --rm -p 8765:8765 hub                                      # in-memory backend
#   docker run --rm -p 8765:8765 -e HUB_BACKEND=redis://redis.internal:6379/0 hub
#
# Every setting is a HUB_* environment variable or a flag after the image name (flags replace
# the default --host 0.0.0.0, so keep it: `docker run hub --host 0.0.0.0 --log-level debug`).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every dependency (msgpack, pydantic-core, uvloop, ...) installs from a wheel, so no compiler
# is needed; the build backend (setuptools) lives in pip's temporary build environment only.
# The source is removed once installed: the image runs the installed package.
COPY pyproject.toml README.md /src/
COPY hub /src/hub
COPY clients/python /src/clients/python
RUN pip install '/src[uvloop]' \
    && rm -rf /src \
    && useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin hub

USER hub
WORKDIR /tmp
EXPOSE 8765

# 200 while the node and its backend are up; 503 while its Redis is unreachable (the node
# reconnects by itself, so an unhealthy container needs no restart). HUB_PORT is honoured; a
# --port flag is not seen here.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\ntry:\n    urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HUB_PORT', '8765'), timeout=3)\nexcept Exception as exc:\n    sys.exit(f'unhealthy: {exc}')"]

# hub-server is PID 1 and handles SIGTERM itself: it stops accepting, drains queues for up to
# HUB_DRAIN_TIMEOUT seconds and closes every connection with 1001.
ENTRYPOINT ["hub-server"]
CMD ["--host", "0.0.0.0"]
