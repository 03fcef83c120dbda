"""Request and response shapes of the loops part of the JSON API (``training.api``)."""

from datetime import datetime
from typing import Literal

from ninja import Schema
from ninja.errors import ValidationError as Unprocessable
from pydantic import Field

from annotation.api_schemas import BodyIn

from .models import Labeller, Loop, LoopRound

LabellerName = Literal[tuple(Labeller.values)]  # type: ignore[valid-type]
BODY_FIELDS = {
    "name": "name",
    "labeller": "labeller",
    "settings": "settings",
    "prompt_version": "prompt_version_id",
    "start_model": "start_model_id",
    "reward_model": "reward_model_id",
}
"""``loop_create``'s field names → the body's; any other name is a setting."""


class LoopIn(BodyIn):
    name: str = Field(max_length=200)
    prompt_version_id: int = Field(
        description="The dataset version whose training prompts each round samples and whose held-out "
        "prompts each round is evaluated on; the loop belongs to its project."
    )
    start_model_id: int = Field(description="A language model from GET /api/jobs/models: the first policy.")
    reward_model_id: int = Field(description="A reward model from GET /api/jobs/models: labels every round.")
    labeller: LabellerName
    settings: dict = Field(
        default_factory=dict,
        description="Loop settings (rounds, patience, k, temperature, top_p, max_new_tokens, max_prompts, "
        "eval_prompts, max_prompt_length, pair_rule, gap, rso_accept, rso_beta, seed) and `train`, the "
        "training job's settings (method, learning_rate, max_steps, lora, ...); the labeller's defaults "
        "fill the rest (docs/loops.md).",
    )


class RoundOut(Schema):
    number: int
    stage: str
    policy_id: int
    policy_name: str
    dataset_version_id: int | None
    dataset_version_number: int | None
    training_job_id: int | None
    trained_model_id: int | None
    trained_model_name: str | None
    labelling: dict
    evaluation: dict = Field(description="Held-out figures; `examples` only with ?examples=true.")
    started_at: datetime
    finished_at: datetime | None


class LoopOut(Schema):
    id: int
    name: str
    project_id: int
    state: str
    waiting_for_broker: bool
    stage: str
    round_number: int
    progress_done: int
    progress_total: int
    percent: int
    labeller: str
    prompt_version_id: int
    start_model_id: int
    reward_model_id: int | None
    settings: dict
    result: dict = Field(description="The baseline evaluation (its rows left out) and why the loop stopped.")
    attempts: int
    error: str
    cancel_requested: bool
    created_at: datetime
    finished_at: datetime | None
    rounds: list[RoundOut]


def round_out(one: LoopRound, *, examples: bool = False) -> dict:
    version, trained = one.dataset_version, one.trained_model
    evaluation = one.evaluation or {}
    return {
        "number": one.number,
        "stage": one.stage,
        "policy_id": one.policy_id,
        "policy_name": one.policy.name,
        "dataset_version_id": one.dataset_version_id,
        "dataset_version_number": version.number if version else None,
        "training_job_id": one.training_job_id,
        "trained_model_id": one.trained_model_id,
        "trained_model_name": trained.name if trained else None,
        "labelling": one.labelling or {},
        "evaluation": evaluation if examples else {k: v for k, v in evaluation.items() if k != "examples"},
        "started_at": one.started_at,
        "finished_at": one.finished_at,
    }


def loop_out(loop: Loop, *, examples: bool = False) -> dict:
    """The loop and its rounds (``rounds`` prefetched with their policy, version and trained model)."""
    return {
        "id": loop.pk,
        "name": loop.name,
        "project_id": loop.project_id,
        "state": loop.state,
        "waiting_for_broker": loop.awaiting_broker,
        "stage": loop.stage,
        "round_number": loop.round_number,
        "progress_done": loop.progress_done,
        "progress_total": loop.progress_total,
        "percent": round(100 * loop.progress_done / loop.progress_total) if loop.progress_total else 0,
        "labeller": loop.labeller,
        "prompt_version_id": loop.prompt_version_id,
        "start_model_id": loop.start_model_id,
        "reward_model_id": loop.reward_model_id,
        "settings": loop.settings,
        "result": {k: v for k, v in (loop.result or {}).items() if k != "baseline_rows"},
        "attempts": loop.attempts,
        "error": loop.error,
        "cancel_requested": loop.cancel_requested,
        "created_at": loop.created_at,
        "finished_at": loop.finished_at,
        "rounds": [round_out(one, examples=examples) for one in loop.rounds.all()],
    }


def loop_field_errors(errors: dict[str, list[str]]) -> Unprocessable:
    """``loop_create``'s errors as a 422 naming the body's fields: a model by its ``…_id``, a setting
    under ``settings`` (``train.method`` → ``["body", "settings", "train", "method"]``)."""
    detail = []
    for name, messages in errors.items():
        setting = name.removeprefix("settings.").removeprefix("settings")
        loc = (
            ["body", BODY_FIELDS[name]] if name in BODY_FIELDS else ["body", "settings", *setting.split(".")]
        )
        loc = [part for part in loc if part]
        detail.append({"loc": loc, "msg": " ".join(messages)})
    return Unprocessable(detail)
