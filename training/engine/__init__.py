"""PrefStudio's training engine: pure PyTorch + transformers + peft, no Django.

Public API (what the web app calls)::

    from training.engine import train, config_from_dict, config_to_dict, METHODS
    config = config_from_dict({"method": "dpo", "model": "bundled", "train_file": ..., "output_dir": ...})
    result = train(config, callbacks=[db_logger], should_cancel=lambda: job_cancelled(), resume=False)

``callbacks`` get ``log(metrics: dict[str, float], step: int)``; see loop.py and config.py.
"""

from training.engine.api import train
from training.engine.config import (
    METHODS,
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)
from training.engine.loop import NonFiniteError, TrainResult
from training.engine.metrics import MetricsCallback

__all__ = [
    "METHODS",
    "ConfigError",
    "MetricsCallback",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "train",
]
