"""Plain, normalized rows that every parser produces and the import service writes.

Nothing here touches Django: phase one (parse + validate) builds these, phase two stores them.
"""

from dataclasses import dataclass, field
from pathlib import Path


class RowError(Exception):
    """One or more problems with one input row: ``problems`` is a list of (field, reason)."""

    def __init__(
        self, field_name: str = "", reason: str = "", *, problems: list[tuple[str, str]] | None = None
    ):
        self.problems = problems if problems is not None else [(field_name, reason)]
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.problems))


class FileFormatError(Exception):
    """The file as a whole cannot be read (unknown type, undetectable columns, a bad zip)."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One line of the error report: 1-based line (JSONL/CSV) or record index (JSON/Parquet)."""

    line: int
    field: str
    reason: str

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class StagedImage:
    """A verified image, copied to a staging folder until the import is written."""

    sha256: str
    format: str
    extension: str
    width: int
    height: int
    size_bytes: int
    staged_path: Path


@dataclass(slots=True)
class CandidateIn:
    text: str = ""
    messages: list[dict] | None = None
    image: StagedImage | None = None
    steps: list[str] | None = None
    sentences: list[str] | None = None

    def content(self) -> dict:
        return {
            "text": self.text,
            "messages": self.messages,
            "image": self.image.sha256 if self.image else None,
            "steps": self.steps,
            "sentences": self.sentences,
        }


@dataclass(slots=True)
class JudgmentIn:
    choice: str = ""
    label_score: float | None = None
    sentence_labels: list | None = None


@dataclass(slots=True)
class TaskIn:
    """Candidate positions shown together, and the judgment the file already holds for them."""

    positions: tuple[int, ...]
    judgment: JudgmentIn | None = None


@dataclass(slots=True)
class RowIn:
    """One input row, normalized: becomes one Item, its Candidates, Tasks and imported Judgments."""

    line: int
    prompt: str
    candidates: list[CandidateIn]
    tasks: list[TaskIn]
    messages: list[dict] | None = None
    images: list[StagedImage] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    split: str = ""
    content_hash: str = ""

    def content(self) -> dict:
        """What identifies the row (split and metadata excluded), hashed into ``content_hash``."""
        return {
            "prompt": self.prompt,
            "messages": self.messages,
            "images": [image.sha256 for image in self.images],
            "candidates": [candidate.content() for candidate in self.candidates],
        }

    def thumbnails(self, thumbnail) -> dict:
        """The prompt's images and each candidate with ``thumbnail(image)``
        of its image (None for a text one), made while the staged images exist."""
        return {
            "image_views": [
                {"label": f"{i.width}×{i.height} {i.format}", "src": thumbnail(i)} for i in self.images
            ],
            "candidate_views": [
                {"text": _candidate_preview(c), "src": thumbnail(c.image) if c.image else None}
                for c in self.candidates
            ],
        }

    def preview(self) -> dict:
        """A JSON-safe summary for the preview page."""
        return {
            "line": self.line,
            "prompt": self.prompt,
            "messages": self.messages,
            "images": [f"{i.width}×{i.height} {i.format}" for i in self.images],
            "candidates": [_candidate_preview(c) for c in self.candidates],
            "tasks": [
                {
                    "positions": list(t.positions),
                    "judgment": _judgment_preview(t.judgment),
                    "words": task_words(t),
                }
                for t in self.tasks
            ],
            "split": self.split,
        }


def _candidate_preview(candidate: CandidateIn) -> str:
    if candidate.image is not None:
        image = candidate.image
        return f"[image {image.width}×{image.height} {image.format}, {image.size_bytes} bytes]"
    if candidate.steps and len(candidate.steps) > 1:
        return " | ".join(candidate.steps)
    return candidate.text


CHOICE_WORDS = {"tie": "judged a tie", "both_bad": "both judged bad"}


def task_words(task: TaskIn) -> str:
    """What the task asks and what the file already says about it, in words (responses counted from 1):
    "response 1 vs response 2: the file prefers response 1", "rank responses 1–4: to judge"."""
    shown = [p + 1 for p in task.positions]
    if len(shown) == 1:
        asks = f"label response {shown[0]}"
    elif len(shown) == 2:
        asks = f"response {shown[0]} vs response {shown[1]}"
    else:
        asks = f"rank responses {shown[0]}–{shown[-1]}"
    judgment = task.judgment
    if judgment is None:
        return f"{asks}: to judge"
    if judgment.choice in ("a", "b") and len(shown) == 2:
        return f"{asks}: the file prefers response {shown[0] if judgment.choice == 'a' else shown[1]}"
    if judgment.choice in CHOICE_WORDS:
        return f"{asks}: the file has it {CHOICE_WORDS[judgment.choice]}"
    return f"{asks}: the file holds {_judgment_preview(judgment)}"


def _judgment_preview(judgment: JudgmentIn | None) -> str:
    if judgment is None:
        return ""
    if judgment.sentence_labels is not None:
        return "sentence labels: " + ", ".join(str(label) for label in judgment.sentence_labels)
    return judgment.choice
