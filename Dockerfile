# The full herdwatch image (worker, sink, CLI) used by docker-compose.yml.
# The lighter collector-only image is deploy/Dockerfile.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY contract contract
COPY simulator simulator
COPY herdwatch herdwatch
COPY collectors collectors
COPY streams streams
COPY detectors detectors
COPY storage storage
RUN pip install --no-cache-dir '.[all]'
RUN useradd --system herdwatch && mkdir -p /var/lib/herdwatch && chown herdwatch /var/lib/herdwatch
USER herdwatch
WORKDIR /var/lib/herdwatch
ENTRYPOINT []
CMD ["herdwatch", "--help"]
