"""The engine's entry point: ``train(config, *, callbacks, should_cancel, resume)`` for every method."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from training.engine import curriculum, fastslow, loop, methods  # noqa: F401 - methods registers the configs
from training.engine.config import TrainConfig
from training.engine.metrics import MetricsCallback


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[MetricsCallback] = (),
    should_cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    progress: bool = False,
) -> loop.TrainResult:
    """Train any registered method (see ``config.METHODS``); Curry-DPO and fast-slow DPO have their own
    drivers, every other method runs the standard loop."""
    kwargs = {"callbacks": callbacks, "should_cancel": should_cancel, "resume": resume, "progress": progress}
    if isinstance(config, curriculum.CurryDPOConfig):
        return curriculum.train_curriculum(config, train_fn=loop.train, **kwargs)
    if isinstance(config, fastslow.FastSlowDPOConfig):
        return fastslow.train_fast_slow(config, **kwargs)
    return loop.train(config, **kwargs)
