"""Serve the app and a Celery worker together; Ctrl-C stops both."""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

PR_SET_CHILD_SUBREAPER = 36
STOP_SECONDS = 15.0


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
        _become_subreaper()
        _stop_on_interrupt_and_term()
        worker = subprocess.Popen(worker_command(queues=queues), start_new_session=True)
        web = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", addr], cwd=settings.BASE_DIR, start_new_session=True
        )
        children = [("worker", worker), ("web server", web)]
        self.stdout.write(f"worker pid {worker.pid}, web server pid {web.pid}")
        try:
            while all(child.poll() is None for _, child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stdout.write(stop_groups(children))


def stop_groups(children: list[tuple[str, subprocess.Popen]]) -> str:
    """SIGTERM each child's process group; a group still there after ``STOP_SECONDS`` gets SIGKILL.
    Returns what happened, for the terminal."""
    for _, child in children:
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    lines = []
    for name, child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        if not _wait_group_gone(child.pid, deadline):
            lines.append(f"The {name} did not stop within {STOP_SECONDS:g} s; killed it and what it started.")
            _signal_group(child.pid, signal.SIGKILL)
            child.wait()
            _wait_group_gone(child.pid, time.monotonic() + 10)
    return "\n".join([*lines, "Stopped the server and the worker."])


def _stop_on_interrupt_and_term() -> None:
    """Ctrl-C and SIGTERM (``docker stop``, a supervisor) both stop the children.  A process started in the
    background of a script inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _become_subreaper() -> None:
    """Linux: orphans of our children (a killed worker's pool processes) are re-parented to this process,
    which reaps them, instead of to PID 1, which in a container may never do so."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_orphans() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, deadline: float) -> bool:
    """Whether every process of the group has exited (and been reaped) before ``deadline``."""
    while True:
        _reap_orphans()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
