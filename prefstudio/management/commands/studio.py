"""Serve the app and a Celery worker together; Ctrl-C stops both."""

import contextlib
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


def worker_command(*, queues: str = "cpu,gpu", concurrency: int = 1) -> list[str]:
    """The worker command line `make run` starts (compose runs the same with its own queue)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "prefstudio",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--hostname",
        "studio@%h",
    ]


class Command(BaseCommand):
    help = "Run the web server on 127.0.0.1:8000 and a Celery worker on the configured broker."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--queues", default="cpu,gpu", help="Queues the local worker consumes.")

    def handle(self, *args, addr, queues, **options):
        database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        broker = settings.CELERY_BROKER_URL.split("@")[-1]
        self.stdout.write(f"Broker: {broker}  Database: {database}")
        self.stdout.write(
            self.style.SUCCESS(f"PrefStudio on http://{addr}/  (Ctrl-C stops the server and the worker)")
        )
        # Each child leads its own process group, so stopping it also stops what it started
        # (runserver's reloaded child, the worker's pool processes).
        children = [
            subprocess.Popen(worker_command(queues=queues), start_new_session=True),
            subprocess.Popen(
                [sys.executable, "manage.py", "runserver", addr],
                cwd=settings.BASE_DIR,
                start_new_session=True,
            ),
        ]
        self.stdout.write(f"worker pid {children[0].pid}, web server pid {children[1].pid}")
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop(children)

    def _stop(self, children):
        for child in children:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            _wait_group_gone(child.pid, deadline)
            _signal_group(child.pid, signal.SIGKILL)
        self.stdout.write("Stopped the server and the worker.")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
