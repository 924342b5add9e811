# membrane-otel for docker-compose.yml: one image runs the bridge, the reference bus and
# the example agent (each service picks its command). Not used by the tests.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY examples ./examples
RUN pip install --no-cache-dir .

# The ledger and the envelope spool live on a volume, so they outlive the container.
ENV MEMBRANE_LEDGER_PATH=/data/resonance_ledger.jsonl \
    MEMBRANE_SPOOL_DIR=/data/spool \
    PYTHONUNBUFFERED=1
RUN useradd --uid 10001 --no-create-home membrane && mkdir -p /data && chown membrane /data
USER 10001
