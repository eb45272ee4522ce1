# CPU/GPU image for the workers, migrate, flower and api services of docker-compose.yml.
# For a CUDA host, install a CUDA torch build instead of the CPU wheel (one line below).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md ./
COPY core core
COPY embedding embedding
COPY db db
COPY workers workers
COPY api api
COPY migrations migrations
COPY alembic.ini ./
RUN pip install --no-cache-dir .
ENV HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
USER nobody
