"""Serve the app and a Celery worker together; Ctrl-C stops both."""

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
        children = [
            subprocess.Popen(worker_command(queues=queues)),
            subprocess.Popen([sys.executable, "manage.py", "runserver", addr], cwd=settings.BASE_DIR),
        ]
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop(children)

    def _stop(self, children):
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        self.stdout.write("Stopped the server and the worker.")
