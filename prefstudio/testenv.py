"""Point tests and benchmarks at the local PostgreSQL and Redis when they answer.

Loaded as a pytest plugin (``-p prefstudio.testenv`` in pyproject) before Django reads its settings,
so ``make test`` and a bare ``pytest`` both run the production configuration wherever those services
exist, and the embedded defaults (SQLite + filesystem broker) elsewhere. Variables already set win.
"""

import os
import socket
import sys


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def service_environment() -> dict[str, str]:
    """DATABASE_URL and CELERY_BROKER_URL for this run (per-run names, so parallel runs never share)."""
    pg_host = os.environ.get("PGHOST", "127.0.0.1")
    redis_host = os.environ.get("REDIS_HOST", "127.0.0.1")
    run_id = os.getpid()
    env = {}
    if "DATABASE_URL" not in os.environ:
        if reachable(pg_host, 5432):
            env["DATABASE_URL"] = f"postgres://postgres@{pg_host}:5432/prefstudio_{run_id}"
        else:
            print(f"PostgreSQL not reachable at {pg_host}:5432: running on SQLite.", file=sys.stderr)
    if "CELERY_BROKER_URL" not in os.environ:
        if reachable(redis_host, 6379):
            env["CELERY_BROKER_URL"] = f"redis://{redis_host}:6379/{run_id % 15 + 1}"
        else:
            print(
                f"Redis not reachable at {redis_host}:6379: Celery uses the filesystem broker.",
                file=sys.stderr,
            )
    return env


if os.environ.get("PREFSTUDIO_EMBEDDED_ONLY") != "1":
    os.environ.update(service_environment())
