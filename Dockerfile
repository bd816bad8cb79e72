# One image for the token service (with the built web client) and the worker.
FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci
COPY web/ ./
RUN npm run build -- --outdir=/out

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY llmrtc ./llmrtc
COPY worker ./worker
COPY signalling ./signalling
RUN pip install '.[all]'
COPY --from=web /out ./signalling/static
USER 1000:1000
# 8080: the token service; 9100: the worker's METRICS_PORT (/metrics, /healthz, /readyz).
EXPOSE 8080 9100
# SIGTERM starts the worker's drain (docs/deploy.md); the orchestrator's grace period must outlast DRAIN_TIMEOUT_S.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "worker", "start"]
