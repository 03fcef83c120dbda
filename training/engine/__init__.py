"""PrefStudio's training engine: pure PyTorch + transformers + peft, no Django (docs/architecture.md).

Public API (what the web app calls)::

    from training.engine import train, config_from_dict, config_to_dict, METHODS
    config = config_from_dict({"method": "dpo", "model": "bundled", "train_file": ..., "output_dir": ...})
    result = train(config, callbacks=[db_logger], should_cancel=lambda: job_cancelled(), resume=False)

``callbacks`` get ``log(metrics: dict[str, float], step: int)`` (``runtime/metrics.py``); ``METHODS``
maps each method name to its config class, recipe and accepted dataset kinds (``methods.py``).
"""

from training.engine.methods import (
    METHODS,
    Method,
    config_from_dict,
    config_to_dict,
    load_config,
    method_of,
    planned_steps,
    recipe_for,
    train,
)
from training.engine.runtime.config import ConfigError, RunConfig
from training.engine.runtime.loop import NonFiniteError, TrainResult
from training.engine.runtime.metrics import MetricsCallback
from training.engine.runtime.sharding import FSDP_WRAPS, SHARDINGS, STRATEGIES

__all__ = [
    "METHODS",
    "ConfigError",
    "Method",
    "MetricsCallback",
    "NonFiniteError",
    "RunConfig",
    "FSDP_WRAPS",
    "SHARDINGS",
    "STRATEGIES",
    "TrainResult",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "method_of",
    "planned_steps",
    "recipe_for",
    "train",
]
