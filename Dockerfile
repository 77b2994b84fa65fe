# The tsmeter image for docker-compose.yml's scheduler service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# setup.py builds the compiled fast paths when a C compiler is present; the slim image has
# none, so the scheduler runs on tsmeter's Python code (it records little).
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip install ".[influxdb,scheduler]" && useradd --create-home --uid 10001 tsmeter \
    && mkdir /data && chown tsmeter /data
USER tsmeter
WORKDIR /data
VOLUME ["/data"]
CMD ["tsmeter", "scheduler", "run"]
