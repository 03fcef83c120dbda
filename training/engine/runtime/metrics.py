"""Metric reporting: the callback protocol, a JSONL writer, a tqdm progress bar."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class MetricsCallback(Protocol):
    """Receives metrics as the run goes (train metrics by TRL name, eval metrics under ``eval/``)."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...


# Optional: a callback that also defines ``on_start(total_steps: int, start_step: int)`` is told the planned
# number of optimizer steps (and where a resumed run starts) before the first step, e.g. for a progress bar.
# One that defines ``on_stage(stage: str, done: int, total: int)`` hears what the run does before training:
# ``loading`` (the model, converted on first use), then ``reference`` with batches done of total (the
# reference log-probs pass, skipped when cached); training itself is ``on_start`` and the steps.


def announce_stage(callbacks, stage: str, done: int = 0, total: int = 0) -> None:
    """Tell every callback that has ``on_stage`` what the run is doing (see above)."""
    for callback in callbacks:
        if hasattr(callback, "on_stage"):
            callback.on_stage(stage, done, total)


class JsonlMetrics:
    """Appends ``{"step": N, **metrics}`` lines to a file; on resume, keeps the lines up to the resumed
    step in a new file put in place by rename (a reader holding the old one sees a different file, never
    a rewrite under its offset), dropping a last line a killed run left unfinished.
    ``guard()`` runs before every write (it raises when the run no longer owns its output folder)."""

    def __init__(
        self, path: Path, *, resume_step: int | None = None, guard: Callable[[], None] = lambda: None
    ) -> None:
        self.path, self.guard = Path(path), guard
        self.path.parent.mkdir(parents=True, exist_ok=True)
        guard()
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [row for row in _complete_rows(self.path.read_text()) if row[0]["step"] <= resume_step]
            fresh = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fresh.write_text("".join(line + "\n" for _, line in kept))
            os.replace(fresh, self.path)

    def log(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}
        self.guard()
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **clean}) + "\n")


def _complete_rows(text: str) -> list[tuple[dict, str]]:
    """Each finished line with its parsed row; a last line without its newline is one a kill cut short."""
    lines = text.split("\n")[:-1]  # the piece after the last newline is unfinished (or empty)
    return [(json.loads(line), line) for line in lines if line.strip()]


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class ProgressBar:
    """A tqdm bar over optimizer steps showing the loss (and the reward accuracy where a recipe has one)."""

    def __init__(self, total: int, initial: int = 0) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step")
        self.last = initial

    def log(self, metrics: dict[str, float], step: int) -> None:
        if "loss" in metrics:
            self.bar.update(step - self.last)
            self.last = step
            shown = {"loss": f"{metrics['loss']:.4f}"}
            if "rewards/accuracies" in metrics:
                shown["acc"] = f"{metrics['rewards/accuracies']:.2f}"
            self.bar.set_postfix(shown)
        held_out = {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}
        if held_out:
            best = held_out.get("rewards/accuracies", held_out.get("loss"))
            name = "accuracy" if "rewards/accuracies" in held_out else "loss"
            if best is not None:
                self.bar.write(f"step {step}: eval {name} {best:.3f}")

    def close(self) -> None:
        self.bar.close()


def open_sinks(
    out_dir: Path,
    callbacks,
    *,
    total: int,
    start: int,
    resumed: bool,
    progress: bool,
    guard: Callable[[], None] = lambda: None,
) -> tuple[list, ProgressBar | None]:
    """The run's metric sinks (``metrics.jsonl``, the callbacks, a progress bar when asked), told where the
    run starts; a resumed run keeps its ``metrics.jsonl`` up to ``start``."""
    resume_step = start if resumed else None
    sinks: list = [JsonlMetrics(Path(out_dir) / "metrics.jsonl", resume_step=resume_step, guard=guard)]
    sinks += list(callbacks)
    bar = ProgressBar(total, start) if progress else None
    sinks += [bar] if bar else []
    for sink in sinks:
        if hasattr(sink, "on_start"):
            sink.on_start(total_steps=total, start_step=start)
    return sinks, bar
