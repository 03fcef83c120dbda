"""Which of the supported layouts a file is, judged from its columns (and the project's task type)."""

from dataclasses import dataclass

from annotation.text.storable import key_name

from .records import FileFormatError

FORMAT_NAMES = ("trl", "responses", "hh", "stepwise", "pickapic", "multi_image", "factuality")
TASK_TYPES = {
    "trl": ("pairwise",),
    "hh": ("pairwise",),
    "responses": ("pairwise", "ranking", "stepwise"),
    "stepwise": ("stepwise",),
    "pickapic": ("image_pair",),
    "multi_image": ("multi_image",),
    "factuality": ("factuality",),
}
_TITLES = {
    "trl": "TRL preference",
    "responses": "Prompt with a responses list",
    "hh": "Anthropic HH transcripts",
    "stepwise": "Step-wise (prompt, initial_reason_steps, chosen, rejected)",
    "pickapic": "Pick-a-Pic image pairs",
    "multi_image": "Multi-image prompts",
    "factuality": "Factuality (responses and sentences)",
}


@dataclass(frozen=True)
class Format:
    name: str
    conversational: bool = False
    explicit_prompt: bool = True

    def describe(self, source_label: str) -> str:
        parts = [_TITLES[self.name]]
        if self.name in ("trl", "responses"):
            parts.append("conversational" if self.conversational else "standard")
        if self.name == "trl":
            parts.append("explicit prompt" if self.explicit_prompt else "implicit prompt")
        return f"{', '.join(parts)} ({source_label})"

    @property
    def code(self) -> str:
        suffix = ("-conv" if self.conversational else "") + ("" if self.explicit_prompt else "-implicit")
        return self.name + suffix


def _looks_like_hh(value) -> bool:
    return isinstance(value, str) and ("\n\nAssistant:" in value or value.lstrip().startswith("Human:"))


def detect_format(record: dict, *, task_type: str, forced: str | None = None) -> Format:
    """The format of a file whose first readable record is ``record``."""
    name = forced or _detect_name(record, task_type)
    if name not in FORMAT_NAMES:
        raise FileFormatError(f"Unknown format {name!r}: choose one of {', '.join(FORMAT_NAMES)}.")
    conversational = isinstance(record.get("chosen"), list) or isinstance(record.get("prompt"), list)
    if name == "responses":
        responses = record.get("responses")
        conversational = conversational or (
            isinstance(responses, list) and any(isinstance(r, list) for r in responses)
        )
    return Format(name, conversational=conversational, explicit_prompt="prompt" in record or name != "trl")


def _detect_name(record: dict, task_type: str) -> str:
    keys = set(record)
    if {"jpg_0", "jpg_1"} <= keys:
        return "pickapic"
    if "images" in keys:
        return "multi_image"
    if "initial_reason_steps" in keys:
        return "stepwise"
    if "responses" in keys:
        responses = record["responses"]
        has_sentences = isinstance(responses, list) and any(
            isinstance(r, dict) and "sentences" in r for r in responses
        )
        return "factuality" if has_sentences or task_type == "factuality" else "responses"
    if {"chosen", "rejected"} <= keys:
        return "hh" if "prompt" not in keys and _looks_like_hh(record["chosen"]) else "trl"
    columns = ", ".join(key_name(key) for key in sorted(keys)[:20]) or "(none)"
    raise FileFormatError(
        f"Cannot tell the format from the columns ({columns}). Expected TRL preference columns "
        "(prompt, chosen, rejected), a responses list (prompt, responses), Anthropic HH (chosen, rejected "
        "transcripts), step-wise (initial_reason_steps), Pick-a-Pic (caption, jpg_0, jpg_1, label_0) "
        "or multi-image (images)."
    )


def check_task_type(fmt: Format, *, task_type: str, project_name: str) -> None:
    allowed = TASK_TYPES[fmt.name]
    if task_type not in allowed:
        kinds = " or ".join(allowed) if len(allowed) < 3 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"
        raise FileFormatError(
            f"This file holds {_TITLES[fmt.name]} rows, which need a project of type {kinds}; "
            f"project {project_name!r} has type {task_type}."
        )
