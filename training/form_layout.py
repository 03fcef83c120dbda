"""How the launch form reads: each engine config field's human label, its help text without the
docstring's markup, and the group it is shown in (``job_new.html``).  Pure functions of the field name and
docstring; ``forms.py`` builds the fields."""

import re

GROUPS = (
    ("method", "Method"),
    ("optimisation", "Optimisation"),
    ("lora", "LoRA"),
    ("evaluation", "Evaluation and checkpoints"),
    ("advanced", "Advanced"),
)
OPTIMISATION = (
    "learning_rate",
    "batch_size",
    "gradient_accumulation_steps",
    "epochs",
    "max_steps",
    "lr_scheduler",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "seed",
    "shuffle",
)
LORA = ("lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
EVALUATION = (
    "eval_steps",
    "logging_steps",
    "save_steps",
    "keep_checkpoints",
    "save_final",
    "eval_generations",
)
ADVANCED = (
    "precision",
    "device",
    "max_length",
    "max_prompt_length",
    "token_budget",
    "gradient_checkpointing",
    "processes_per_node",
    "nodes",
    "strategy",
    "fsdp_sharding",
    "fsdp_wrap",
)
"""Every other field belongs to the method (its β, τ, ε, γ, terms, stages, …)."""

LABELS = {
    "lr_scheduler": "Learning-rate schedule",
    "max_grad_norm": "Gradient clipping (max norm)",
    "adam_beta1": "Adam β₁",
    "adam_beta2": "Adam β₂",
    "adam_epsilon": "Adam ε",
    "lora": "Train a LoRA adapter",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA α",
    "lora_dropout": "LoRA dropout",
    "lora_target_modules": "LoRA target modules",
    "beta": "β",
    "tau": "τ",
    "epsilon": "ε (label-flip rate)",
    "gamma": "γ",
    "sft_weight": "SFT term weight α",
    "extra_losses": "Extra loss terms",
    "eval_steps": "Evaluate every N steps",
    "logging_steps": "Log every N steps",
    "save_steps": "Checkpoint every N steps",
    "keep_checkpoints": "Checkpoints to keep",
    "save_final": "Save the final model",
    "max_length": "Max tokens per side",
    "token_budget": "Tokens per packed row",
    "processes_per_node": "Processes per node",
    "fsdp_sharding": "FSDP sharding",
    "fsdp_wrap": "FSDP unit",
    "kl_coef": "KL coefficient",
    "reward_model": "Reward model",
    "value_model": "Value model starts from",
    "dpo_model": "DPO model (token rewards)",
    "reference_model": "Reference model",
    "vf_coef": "Value-loss coefficient",
}


def field_group(name: str) -> str:
    for group, names in (("optimisation", OPTIMISATION), ("lora", LORA), ("evaluation", EVALUATION)):
        if name in names:
            return group
    return "advanced" if name in ADVANCED else "method"


def field_label(name: str) -> str:
    """A field's label: a known one, else its name in words (``warmup_ratio`` → "Warmup ratio")."""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def help_text(doc: str) -> str:
    """A field docstring as plain help: reST ``literals`` and *emphasis* unmarked, "None" said as empty."""
    text = re.sub(r"``([^`]+)``", r"\1", doc)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\bNone\s*=\s*", "empty: ", text)
    text = re.sub(r"\(None\b", "(empty", text)
    text = re.sub(r"\bor None\b", "or empty", text)
    return text
