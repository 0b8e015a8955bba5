# syntax=docker/dockerfile:1
# Production image: `responder serve` (API + in-process dispatch worker) as a non-root user.
# Needs RESPONDER_DATABASE_URL (PostgreSQL 15 + PostGIS 3); see docker-compose.yml.

# The console's front-end assets (htmx, Leaflet) from the same lock file as ./dev setup.
FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
COPY dispatch ./dispatch
COPY geo ./geo
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RESPONDER_MIGRATIONS_DIR=/app/migrations \
    RESPONDER_HOST=0.0.0.0 \
    RESPONDER_PORT=8000 \
    RESPONDER_LOG_FORMAT=json \
    RESPONDER_WEB_ASSETS_DIR=/app/node_modules
RUN groupadd --system responder && useradd --system --gid responder --home /app responder
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY migrations ./migrations
COPY --from=assets /src/node_modules/htmx.org/dist ./node_modules/htmx.org/dist
COPY --from=assets /src/node_modules/leaflet/dist ./node_modules/leaflet/dist
USER responder
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["responder", "serve"]
