"""The launch form's method list: the engine's methods by family, each with a one-line description, and
whether it fits the chosen dataset version (``services.jobs.version_problem``)."""

import re

from training.engine import METHODS

from .form_layout import help_text

FAMILIES = (
    (
        "Preference pairs (DPO family)",
        ("dpo", "ipo", "cdpo", "rdpo", "hinge", "sigmoid_norm", "flex", "cream"),
    ),
    ("Structured preferences", ("step_dpo", "mask_dpo", "curry_dpo")),
    ("Adapters", ("fast_slow_dpo",)),
    ("Reward model and reinforcement learning", ("reward_model", "ppo", "rto")),
    ("Images", ("diffusion_dpo",)),
)
"""Every engine method in exactly one family (a test checks it), in the order the form lists them."""


def method_summary(name: str) -> str:
    """The first sentence of the method's config docstring, without reST markup."""
    text = " ".join(help_text(METHODS[name].doc).split())
    first = re.split(r"(?<=[\w)\]][.!?])\s+", text, maxsplit=1)[0]
    return first.rstrip(".")


def method_groups(*, problem_of) -> list[dict]:
    """``[{"family", "methods": [{"name", "summary", "problem"}]}]``; ``problem_of(name)`` says why a method
    does not fit the chosen version (None when it does)."""
    return [
        {
            "family": family,
            "methods": [{"name": n, "summary": method_summary(n), "problem": problem_of(n)} for n in names],
        }
        for family, names in FAMILIES
    ]
