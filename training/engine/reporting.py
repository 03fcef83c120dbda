"""Reporting a run to the studio over its API, for a run the studio's workers do not supervise (Slurm).

``python -m training.engine train CONFIG.yaml --report-to URL`` (with ``PREFSTUDIO_TOKEN`` in the
environment: an API token of a manager of the job's project) takes the queued job URL names as its attempt,
then posts the metrics as they come (every ``FLUSH_SECONDS``), each checkpoint or sample folder once it is
in place, a heartbeat while it is quiet (loading the model, the reference pass), and the outcome.  A cancel
asked for on the job page reaches the run through the replies (``should_cancel``).  The studio registers
the artifacts and the final model from the run's output folder, which must be storage it shares.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

FLUSH_SECONDS = 2.0
HEARTBEAT_SECONDS = 30.0
TOKEN_ENV = "PREFSTUDIO_TOKEN"  # noqa: S105 - the name of the variable, not a secret


class ReportError(RuntimeError):
    """The studio refused a report (the job is not queued for this run, the token is wrong, ...)."""


class StudioReporter:
    """A metrics callback posting to ``url`` (``…/api/jobs/<id>/report``); ``start()`` first."""

    def __init__(self, url: str, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ReportError(f"--report-to {url!r}: an http(s) URL of the studio")
        self.url = url
        self.token = token or os.environ.get(TOKEN_ENV, "")
        if not self.token:
            raise ReportError(f"--report-to needs an API token in ${TOKEN_ENV}")
        self.attempt: int | None = None
        self.cancel = False
        self.points: list[dict] = []
        self.saved: list[str] = []
        self.last_post = 0.0
        self.lock = threading.Lock()  # the buffers; never held during a post
        self.posting = threading.Lock()  # one post at a time
        self.stopped = threading.Event()
        self.sender: threading.Thread | None = None
        self.refused: ReportError | None = None

    def _post(self, body: dict) -> dict:
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
            self.url,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - as above
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ReportError(f"{self.url}: HTTP {exc.code}: {detail}") from None
        self.cancel = bool(reply.get("cancel"))
        self.last_post = time.monotonic()
        return reply

    def start(self) -> None:
        """Take the job as this run's attempt; from then on a thread of its own posts what the run logs
        every FLUSH_SECONDS (a heartbeat while the run is quiet), so a slow studio never holds up a step."""
        self.attempt = int(self._post({"attempt": None})["attempt"])
        self.sender = threading.Thread(target=self._send, daemon=True, name="studio-reports")
        self.sender.start()

    def _send(self) -> None:
        while not self.stopped.wait(FLUSH_SECONDS):
            with self.lock:
                pending = bool(self.points or self.saved)
            if pending or time.monotonic() - self.last_post >= HEARTBEAT_SECONDS:
                try:
                    self.flush()
                except OSError:
                    self.last_post = time.monotonic()  # kept for the next post; a quiet studio is retried
                except ReportError as exc:  # the job is no longer this run's: the run stops at its next log
                    self.refused = exc
                    return

    def flush(self, **outcome) -> dict:
        """Post what is buffered (and ``outcome``); when the studio cannot be reached, keep it for the
        next post and raise OSError."""
        with self.posting:
            with self.lock:
                points, saved = self.points, self.saved
                self.points, self.saved = [], []
            try:
                return self._post({"attempt": self.attempt, "points": points, "saved": saved, **outcome})
            except OSError:
                with self.lock:
                    self.points, self.saved = points + self.points, saved + self.saved
                raise

    # --- the metrics callback ----------------------------------------------------------------------------

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.refused is not None:
            raise self.refused
        with self.lock:
            self.points.append({"step": step, **metrics})

    def on_saved(self, path: Path) -> None:
        path = Path(path)  # <output_dir>/checkpoint-N, /final or /samples/step-N: named within the folder
        name = f"{path.parent.name}/{path.name}" if path.parent.name == "samples" else path.name
        with self.lock:
            self.saved.append(name)

    def should_cancel(self) -> bool:
        return self.cancel

    def finish(self, outcome: str, *, step: int, error: str = "") -> None:
        """Report the outcome (with what is still buffered), trying for about a minute."""
        self.stopped.set()
        if self.sender is not None:
            self.sender.join()
        for wait in (1, 2, 4, 8, 16, 32, 0):
            try:
                self.flush(outcome=outcome, step=step, error=error[:10000])
                return
            except OSError:
                if not wait:
                    raise
                time.sleep(wait)
