# lrtune service image: `docker compose up` runs it with Redis (see docker-compose.yml and docs/service.md);
# `./dev image` builds it. It listens on 0.0.0.0 inside the container, so it refuses to start without
# LRTUNE_ADMIN_KEY.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The CPU build of torch first, so that no CUDA build is pulled in by the extras.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY tuner ./tuner
COPY client ./client
COPY server ./server
# The import names: lrtune/client, lrtune/server and lrtune/tuner link to the folders above.
COPY lrtune ./lrtune
RUN pip install ".[server]"

RUN useradd --create-home --uid 10001 lrtune
USER lrtune

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

CMD ["lrtune", "serve", "--host", "0.0.0.0", "--port", "8000"]
