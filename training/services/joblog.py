"""A job's log tail: a text file ``log.txt`` in its output folder."""

import datetime as dt
from pathlib import Path

from .paths import log_path

SHOWN = ("loss", "rewards/accuracies", "rewards/margins", "eval/loss", "eval/rewards/accuracies")


class JobLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_job(cls, job) -> "JobLog":
        return cls(log_path(job))

    def write(self, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")

    def write_points(self, points) -> None:
        """One line per step that reported a shown metric (loss, accuracy, margins, eval)."""
        by_step: dict[int, list[str]] = {}
        for step, name, value, _ in points:
            if name in SHOWN:
                by_step.setdefault(step, []).append(f"{name}={value:.4g}")
        for step, parts in sorted(by_step.items()):
            self.write(f"step {step}: " + " ".join(parts))


def log_tail(job, *, lines: int = 40) -> str:
    """The last ``lines`` lines of the job's log (empty when it has none yet)."""
    path = log_path(job)
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
