"""What the Django benches share: settings in a child process, and a throwaway PostgreSQL database."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefstudio.settings")
    import django

    django.setup()


@contextmanager
def scratch_database(admin_url: str, name: str) -> Iterator[str]:
    """A new database ``name`` on ``admin_url``'s server (its URL), dropped afterwards."""
    import psycopg

    sys.path.insert(0, str(ROOT / "bench"))
    from import_throughput import with_database

    server = with_database(admin_url, "postgres")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
