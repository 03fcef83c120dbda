"""Where a PPO or RTO job's training prompts come from: the dataset version, its project's items, or a list.

The job's dataset version anchors it to a project and keeps its held-out prompts (every source evaluates
on the version's ``test`` split, so runs on different sources compare).  With a source other than the
version, the server writes the prompts once at launch to ``prompts.jsonl`` in the run's own folder and
the engine trains on that file: later edits to the project's items never change what a job trained on.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from annotation.models import Split
from annotation.services.candidates import item_prompt

from .paths import run_dir

VERSION, PROJECT, LIST = "version", "project", "list"
SOURCES = {
    VERSION: "the dataset version's training prompts",
    PROJECT: "every item of the version's project",
    LIST: "a list of prompts typed here",
}
PROMPTS_FILE = "prompts.jsonl"
MAX_PROMPTS = 5000
MAX_PROMPT_CHARS = 8000


class PromptSourceError(ValueError):
    """A source or list that cannot be trained on; ``field`` is the launch parameter to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class PromptSource:
    kind: str
    rows: tuple[dict, ...] = ()
    """The training rows (``{"prompt", "split": "train"}``) for a source other than the version."""

    @property
    def writes_file(self) -> bool:
        return self.kind != VERSION


def _list_lines(value) -> list[tuple[int, object]]:
    if isinstance(value, str):
        return [(n, line) for n, line in enumerate(value.splitlines(), 1) if line.strip()]
    if isinstance(value, (list, tuple)):
        return [(n, entry) for n, entry in enumerate(value, 1)]
    raise PromptSourceError("prompt_list", "give the prompts as text (one per line) or a list of strings.")


def _messages_problem(messages: list) -> str | None:
    for message in messages:
        if not (
            isinstance(message, dict) and isinstance(message.get("content"), str) and message.get("role")
        ):
            return "each message needs a 'role' and a string 'content'"
        if "\x00" in message["content"] + str(message["role"]):
            return "contains a NUL character"
    return None if messages else "an empty message list"


def _prompt_of(entry) -> tuple[object, str | None]:
    """``(prompt, problem)`` for one line: plain text, or a JSON object with a ``prompt`` (text or chat
    messages), as the engine's prompt-only JSONL has."""
    if isinstance(entry, str) and entry.lstrip().startswith("{"):
        try:
            entry = json.loads(entry)
        except json.JSONDecodeError as exc:
            return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(entry, dict):
        entry = entry.get("prompt")
        if isinstance(entry, list):
            problem = _messages_problem(entry)
            size = sum(len(m.get("content", "")) for m in entry if isinstance(m, dict))
            return entry, problem or (
                f"longer than {MAX_PROMPT_CHARS} characters" if size > MAX_PROMPT_CHARS else None
            )
    if not isinstance(entry, str) or not entry.strip():
        return None, "expected prompt text, or a JSON object with a 'prompt' field"
    if "\x00" in entry:
        return None, "contains a NUL character"
    if len(entry) > MAX_PROMPT_CHARS:
        return None, f"longer than {MAX_PROMPT_CHARS} characters"
    return entry.strip(), None


def prompt_list_parse(value) -> list:
    """The prompts of a typed list; PromptSourceError naming the first bad line (1-based)."""
    lines = _list_lines(value)
    if not lines:
        raise PromptSourceError("prompt_list", "the list has no prompts.")
    if len(lines) > MAX_PROMPTS:
        raise PromptSourceError("prompt_list", f"{len(lines)} prompts; at most {MAX_PROMPTS} per job.")
    prompts = []
    for number, entry in lines:
        prompt, problem = _prompt_of(entry)
        if problem:
            raise PromptSourceError("prompt_list", f"line {number}: {problem}.")
        prompts.append(prompt)
    return prompts


def project_prompts(project) -> list:
    """What the model is asked for each item of ``project`` (items with no prompt are skipped)."""
    prompts = [item_prompt(item, project.task_type) for item in project.items.order_by("pk")]
    prompts = [p for p in prompts if p]
    if len(prompts) > MAX_PROMPTS:
        raise PromptSourceError(
            "prompt_source", f"the project has {len(prompts)} prompts; at most {MAX_PROMPTS}."
        )
    return prompts


def prompt_source_resolve(*, params: dict, dataset_version) -> PromptSource:
    """The source ``params`` choose (``prompt_source``, default the version; ``prompt_list`` for a list)."""
    kind = params.get("prompt_source") or VERSION
    if kind not in SOURCES:
        raise PromptSourceError("prompt_source", f"one of {', '.join(SOURCES)}, not {kind!r}.")
    if kind != LIST and params.get("prompt_list") not in (None, "", [], ()):
        raise PromptSourceError("prompt_list", f"a prompt list is read only with prompt_source {LIST!r}.")
    if kind == VERSION:
        return PromptSource(VERSION)
    if kind == LIST:
        prompts = prompt_list_parse(params.get("prompt_list") or "")
    else:
        prompts = project_prompts(dataset_version.project)
        if not prompts:
            raise PromptSourceError("prompt_source", f"{dataset_version.project} has no items with a prompt.")
    return PromptSource(kind, tuple({"prompt": p, "split": Split.TRAIN, "source": kind} for p in prompts))


def prompt_file(run_token: str) -> Path:
    return run_dir(run_token) / PROMPTS_FILE


def prompt_file_write(*, path: Path, source: PromptSource, dataset_version) -> None:
    """The source's training prompts, then the version's held-out prompts, as the engine's JSONL."""
    heldout = dataset_version.examples.filter(split=Split.TEST, row__has_key="prompt").order_by("pk")
    rows = [*source.rows, *({"prompt": e.row["prompt"], "split": Split.TEST} for e in heldout)]
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    temporary.replace(path)


def _own_prompt_file(config: dict) -> Path | None:
    """The job's ``prompts.jsonl`` when it trains on one in its own folder (else None)."""
    path = Path(config.get("train_file") or "")
    if path.name != PROMPTS_FILE or path.parent != Path(config.get("output_dir") or "/nonexistent"):
        return None
    return path


def prompt_source_initial(config: dict) -> dict:
    """The launch parameters that rebuild a job's prompt source (``{}`` for the version's prompts): what a
    clone of the job starts from.  Only the run's own ``prompts.jsonl`` is read."""
    path = _own_prompt_file(config)
    if path is None:
        return {}
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return {}
    train = [r for r in rows if isinstance(r, dict) and r.get("split") == Split.TRAIN]
    kind = train[0].get("source") if train else None
    if kind == PROJECT:
        return {"prompt_source": PROJECT}
    if kind != LIST:
        return {}
    lines = [
        r["prompt"] if isinstance(r["prompt"], str) else json.dumps({"prompt": r["prompt"]}) for r in train
    ]
    return {"prompt_source": LIST, "prompt_list": "\n".join(lines)}


def prompt_source_label(config: dict) -> str | None:
    """What the job page says its training prompts were, when not the version's (the first row tells)."""
    path = _own_prompt_file(config)
    if path is None:
        return None
    try:
        with path.open(encoding="utf-8") as fh:
            kind = json.loads(fh.readline() or "{}").get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return SOURCES.get(kind)
