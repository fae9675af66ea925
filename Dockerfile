# The ledger's services (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY aggregates aggregates
COPY projections projections
COPY consumers consumers
RUN pip install --no-cache-dir .
USER nobody
