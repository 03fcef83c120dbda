"""What a recipe is: the few methods the runtime calls (torchtune's ``recipe_interfaces`` shape).

The runtime (``runtime/loop.py``) owns the loop: seeding, device, the step plan, gradient accumulation and
clipping, the optimizer and its schedule, cancellation, the NaN/inf guard, evaluation and checkpoint
cadence, exact resume and the metric sinks.  A recipe says what one micro-batch does and what its model,
data and extra state are.  ``docs/architecture.md`` walks through adding one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from training.engine.runtime.distributed import Dist

Plan = list[list[list[int]]]
"""Every optimizer step's micro-batches, each a list of example positions."""


@dataclass(frozen=True)
class Stage:
    """One pass of the optimizer over a plan, with a fresh optimizer and schedule.  Most recipes have one
    stage; iterative Curry-DPO has one per curriculum set.  Step numbers run on across stages."""

    plan: Plan
    """The stage's optimizer steps (``runtime.optim.step_plan``)."""
    n_examples: int
    """Examples the plan draws from (the ``epoch`` metric is examples seen ÷ this)."""


@dataclass(frozen=True)
class MicroStep:
    """What one micro-batch reports after its backward pass."""

    metrics: dict[str, float]
    """Means over the micro-batch (the runtime averages micro-batches weighted by ``examples``)."""
    examples: int
    """Examples in the micro-batch."""
    tokens: int = 0
    """Tokens the forward pass ran on (``throughput/tokens_per_s``; 0 = not reported)."""


class Interrupted(Exception):
    """A long pass (reference log-probs, evaluation) stopped between two batches: the run was asked to
    stop (``RecipeBase.between_batches``)."""


class Recipe(Protocol):
    """A training method on the runtime.  ``RecipeBase`` gives the optional methods their defaults."""

    unit: ClassVar[str]
    """What one example is, for ``throughput/<unit>_per_s`` (``pairs``, ``images``, ``rollouts``)."""

    def setup(self, device: torch.device) -> None:
        """Load the model and data onto ``device`` (the run is seeded before this is called)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (``{"params": [...]}``); their lr comes from the config."""

    def stages(self) -> list[Stage]:
        """The step plan, as one or more stages (a stage restarts the optimizer and the schedule)."""

    def begin_stage(self, index: int, *, resumed: bool) -> None:
        """Called before the first step a run takes in stage ``index``; ``resumed`` when that step is in
        the middle of the stage (the recipe's state was just restored from a checkpoint)."""

    def lr_scales(self) -> Sequence[float]:
        """Per parameter group, the multiplier of the scheduled learning rate for the coming step
        (empty: 1 for every group)."""

    def micro_step(self, positions: list[int], *, scale: float) -> MicroStep:
        """Forward, loss and ``(loss * scale).backward()`` for the examples at ``positions``."""

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        """After the optimizer step, with the step's averaged metrics: further metrics to log."""

    def evaluate(self) -> dict[str, float]:
        """``eval/…`` metrics on the held-out examples ({} when there are none)."""

    def state_dict(self) -> dict[str, Any]:
        """State beyond weights, optimizer, schedule, RNG and data position that resume must restore."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def save(self, folder: Path) -> None:
        """Write the trainable model (and what loads it) into a checkpoint folder.  A recipe that
        ``supports_fsdp`` also takes ``state_dict=``: the sharded model's weights, gathered (rank 0)."""

    def load(self, folder: Path) -> None:
        """Load a checkpoint folder's weights into the set-up model, in place."""

    def export_final(self, checkpoint: Path, folder: Path) -> None:
        """Write the model every consumer loads (a plain Hugging Face folder) from the last checkpoint."""

    def report(self) -> dict[str, Any]:
        """Facts about the run for its result: examples dropped by reason, caches used."""

    model_kind: ClassVar[str]
    """What the run trains and registers: ``causal_lm``, ``reward_model`` or ``diffusion``."""

    writes_samples: ClassVar[bool]
    """Whether the recipe draws samples (images, rollouts) for the job page: the runtime then calls
    ``write_samples`` before the first step, after every evaluation and after any step at whose end
    ``samples_due()`` is true."""

    def samples_due(self) -> bool:
        """After a step: whether the recipe has new samples to write without an evaluation (PPO's latest
        rollouts)."""

    def write_samples(self, folder: Path) -> None:
        """Write the current model's samples into ``folder`` (a private folder the runtime publishes as
        ``<output_dir>/samples/step-N``)."""

    dist: Dist
    """This process's place among the run's processes, set by the runtime before ``setup`` (a recipe that
    ``supports_distributed`` may share set-up work with it, as the DPO recipe's reference pass does)."""

    should_stop: Callable[[], bool] | None
    """Set by the runtime (the run's ``should_cancel``) before ``setup``; long passes call
    ``between_batches`` so a cancel does not wait for them to end."""

    def between_batches(self) -> None:
        """Between two batches of a pass that is not a training step: raises Interrupted once the run
        was asked to stop."""

    report_stage: Callable[[str, int, int], None]
    """Set by ``train`` before ``setup``: ``report_stage(stage, done, total)`` tells the run's callbacks
    (``on_stage``) how far a long set-up pass is (the DPO recipe's ``reference`` pass)."""

    supports_distributed: ClassVar[bool]
    """Whether the recipe runs on more than one process (``runtime/distributed.py``): a micro-batch's loss
    is a mean over the examples it is given, with no state shared between examples of a step."""

    supports_fsdp: ClassVar[bool]
    """Whether the recipe's model can be sharded (``runtime/sharding.py``): it names its units with
    ``fsdp_units``, its forward passes go through ``sharding.as_forward`` and ``save`` takes the gathered
    ``state_dict``."""

    def fsdp_units(self) -> tuple[nn.Module, list[nn.Module]]:
        """The trainable model (the root FSDP unit) and the modules sharded as units of their own."""

    micro_batch: Sequence[int]
    """The whole micro-batch whose share (``Dist.shard``) the current ``micro_step`` was given, set by the
    runtime before each call: a recipe that draws random numbers per example draws them for all of it and
    takes its share's, so every rank's RNG, and the run, stay those of one process."""

    sharded_root: nn.Module | None
    """The root FSDP unit once ``prepare`` has sharded the model (``strategy: fsdp``), else None."""


class RecipeBase:
    """Defaults for the optional parts of ``Recipe``: one stage, no extra state, one lr for every group."""

    unit: ClassVar[str] = "examples"
    model_kind: ClassVar[str] = "causal_lm"
    writes_samples: ClassVar[bool] = False
    supports_distributed: ClassVar[bool] = False
    supports_fsdp: ClassVar[bool] = False
    dist: Dist = Dist()
    sharded_root: nn.Module | None = None
    micro_batch: Sequence[int] = ()
    should_stop: Callable[[], bool] | None = None

    def report_stage(self, stage: str, done: int, total: int) -> None:
        return None

    def between_batches(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Interrupted

    def begin_stage(self, index: int, *, resumed: bool) -> None:
        return None

    def lr_scales(self) -> Sequence[float]:
        return ()

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def report(self) -> dict[str, Any]:
        return {}

    def write_samples(self, folder: Path) -> None:
        return None

    def samples_due(self) -> bool:
        return False
