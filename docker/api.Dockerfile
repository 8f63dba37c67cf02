# The REST API: slim Python, the project with its `service` extra only. No torch, no DeepSpeed:
# the service never imports them (tests/deploy checks that this file never installs them).
# Build from the repository root: docker build -f docker/api.Dockerfile -t localhost/childtune/api:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# One unprivileged user, the same uid/gid in the worker image: both write the shared artifact
# volume. /artifacts, /data and /models are the mount points docker-compose.yml uses.
RUN groupadd --system --gid 10001 childtune \
    && useradd --system --uid 10001 --gid childtune --home-dir /home/childtune --create-home \
       --shell /usr/sbin/nologin childtune \
    && mkdir -p /artifacts /data /models \
    && chown childtune:childtune /artifacts

WORKDIR /opt/childtune
COPY pyproject.toml README.md ./
# Only what the API imports: the base (service/core), the API (service/api) and the `childtune`
# dispatcher that serves it (service/cli/__init__.py); not the CLI's commands, workers/ or
# childtuning/ (tests/test_layers.py checks the arrows; tests/deploy that this list is enough).
COPY service/__init__.py ./service/
COPY service/core ./service/core
COPY service/api ./service/api
COPY service/cli/__init__.py ./service/cli/
# Every version the service extra names is pinned in pyproject.toml.
RUN pip install "./[service]"

USER 10001:10001
# Out of the source folder: imports come from the installed package.
WORKDIR /home/childtune
EXPOSE 8000
# Liveness only: /healthz answers while the process serves. /readyz (Redis reachable, a worker
# alive) is for monitoring and the load balancer's readiness, not for restarting the API.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["childtune", "api", "--host", "0.0.0.0", "--port", "8000"]
