"""The training skeleton every recipe runs on (``loop.py``) and its parts: configs, the recipe protocol,
checkpoints, the optimizer and step plan, metric sinks, device and memory settings."""
