"""The loop reproductions (``docs/loops.md``, "Reproductions"): the studio's own loops, run on the checkable
preference of ``engine/rlhf_reproduction.py`` (a response that mentions the target letter beats one that
does not) with a reward model trained on it, and read off their held-out evaluations.

* ``reward_model``: a best-vs-worst loop raises the held-out reward-model score round over round.
* ``rso`` against ``sampled_pairs``: one round each from the same start and the same number of pairs per
  prompt (RSO accepts ``accept`` of ``k`` samples and pairs them; the baseline samples ``accept`` and pairs
  them as drawn), the same training; the final held-out score of each.
* ``cream`` against ``dpo``: self-rewarding rounds from a policy tuned on a few seed pairs (whose base makes
  round 1's ranking an implicit reward, as the paper's SFT model), with and without the consistency
  regulariser; each round's consistency C and held-out score.

The tests run them on tiny models (directions only); ``bench/loops.py`` on the bundled model, with the wall
time of each round's stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from annotation.services.versions import dataset_version_from_rows
from training.engine.rlhf_reproduction import property_rows, write_rows

from .models import Labeller, Location, LoopRound, ModelEntry, ModelKind
from .services.loops import loop_create, loop_run

FIT = {"batch_size": 8, "epochs": 3, "warmup_ratio": 0.0, "save_steps": None, "eval_steps": None}


@dataclass
class Lab:
    """What every reproduction shares: the prompt version, the starting policy, a policy tuned on seed pairs
    (its ``base`` the starting one) and the reward model."""

    project: object
    user: object
    version: object
    policy: ModelEntry
    tuned: ModelEntry
    reward: ModelEntry
    reward_accuracy: float
    seed: int


@dataclass
class LoopReading:
    """A finished loop's figures per round (index 0: the starting policy's baseline)."""

    name: str
    state: str
    scores: list[float]
    win_rates: list[float]
    kls: list[float]
    pairs: list[int] = field(default_factory=list)
    consistency: list[float | None] = field(default_factory=list)
    acceptance: list[float | None] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    error: str = ""


def _register(name: str, folder: str, *, project, kind=ModelKind.CAUSAL_LM, base=None) -> ModelEntry:
    return ModelEntry.objects.create(
        name=name, kind=kind, location=Location.LOCAL, path=folder, project=project, base=base
    )


def lab_setup(
    work: Path,
    *,
    project,
    user,
    policy: ModelEntry,
    seed: int = 0,
    n_train: int = 48,
    n_test: int = 16,
    n_seed_pairs: int = 16,
    fit_learning_rate: float = 2e-3,
    tune_learning_rate: float = 1e-3,
) -> Lab:
    """Freeze the property rows as the loops' prompt version of ``project``, train the reward model on them
    and DPO-tune ``policy`` on ``n_seed_pairs`` other rows (the start of the self-rewarding loops)."""
    from training.engine.methods import train
    from training.engine.recipes.dpo_configs import DPOConfig
    from training.engine.recipes.reward_model import RewardModelConfig

    work.mkdir(parents=True, exist_ok=True)
    rows = property_rows(n_train, seed=seed) + property_rows(n_test, seed=seed + 100, split="test")
    version = dataset_version_from_rows(
        project=project,
        rows=[(row["split"], row) for row in rows],
        provenance={"source": "loop reproduction", "property": "mentions z", "seed": seed},
        seed=seed,
        created_by=user,
    )
    fit = {**FIT, "seed": seed, "model": policy.spec}
    reward = train(
        RewardModelConfig(
            train_file=write_rows(work / "pairs.jsonl", rows),
            output_dir=str(work / "reward"),
            learning_rate=fit_learning_rate,
            **fit,
        )
    )
    tuned = train(
        DPOConfig(
            train_file=write_rows(work / "seed-pairs.jsonl", property_rows(n_seed_pairs, seed=seed + 200)),
            output_dir=str(work / "tuned"),
            ref_cache_dir=str(work / "ref"),
            learning_rate=tune_learning_rate,
            beta=0.1,
            **fit,
        )
    )
    tag = f"{project.pk}-{seed}"
    return Lab(
        project=project,
        user=user,
        version=version,
        policy=policy,
        tuned=_register(f"repro-tuned-{tag}", str(tuned.final_model), project=project, base=policy),
        reward=_register(
            f"repro-rm-{tag}", str(reward.final_model), project=project, kind=ModelKind.REWARD_MODEL
        ),
        reward_accuracy=reward.eval_metrics["eval/accuracy"],
        seed=seed,
    )


def run_loop(lab: Lab, *, name: str, labeller: str, settings: dict, start: ModelEntry | None = None):
    """Create and run one loop in this process to its end; its ``LoopReading``."""
    loop = loop_create(
        name=name,
        prompt_version=lab.version,
        start_model=start or lab.policy,
        reward_model=lab.reward,
        labeller=labeller,
        settings={"seed": lab.seed, **settings},
        created_by=lab.user,
    )
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    rounds = list(LoopRound.objects.filter(loop=loop).order_by("number"))
    evaluated = [(loop.result or {}).get("baseline") or {}] + [r.evaluation for r in rounds if r.evaluation]
    return LoopReading(
        name=name,
        state=loop.state,
        scores=[e.get("mean_score") for e in evaluated],
        win_rates=[e.get("win_rate") for e in evaluated],
        kls=[e.get("mean_kl") for e in evaluated],
        pairs=[(r.labelling or {}).get("pairs") for r in rounds],
        consistency=[(r.labelling or {}).get("cream/consistency") for r in rounds],
        acceptance=[(r.labelling or {}).get("rso/acceptance_rate") for r in rounds],
        round_seconds=[
            (r.finished_at - r.started_at).total_seconds() for r in rounds if r.finished_at is not None
        ],
        error=loop.error,
    )


def reward_model_loop(lab: Lab, *, rounds: int = 3, **settings) -> LoopReading:
    return run_loop(
        lab,
        name="reward-model loop",
        labeller=Labeller.REWARD_MODEL,
        settings={"rounds": rounds, "pair_rule": "best_worst", **settings},
    )


def rso_against_sampled_pairs(
    lab: Lab, *, k: int = 32, accept: int = 8, train: dict, **settings
) -> tuple[LoopReading, LoopReading]:
    """One RSO round and one round of plain samples paired as drawn: ``accept`` responses per prompt each,
    so both make up to ``accept / 2`` pairs per prompt; the same training (``train``) for both."""
    rso = run_loop(
        lab,
        name="rso",
        labeller=Labeller.RSO,
        settings={"rounds": 1, "k": k, "rso_accept": accept, "train": train, **settings},
    )
    plain = run_loop(
        lab,
        name="sampled pairs",
        labeller=Labeller.REWARD_MODEL,
        settings={"rounds": 1, "k": accept, "pair_rule": "sampled_pairs", "train": train, **settings},
    )
    return rso, plain


def cream_against_plain_self_rewarding(
    lab: Lab, *, rounds: int = 3, train: dict, **settings
) -> tuple[LoopReading, LoopReading]:
    """Self-rewarding rounds from the tuned policy, trained with ``cream`` and with plain ``dpo``."""
    readings = []
    for method in ("cream", "dpo"):
        readings.append(
            run_loop(
                lab,
                name=f"self-rewarding ({method})",
                labeller=Labeller.CREAM,
                start=lab.tuned,
                settings={"rounds": rounds, "train": {**train, "method": method}, **settings},
            )
        )
    return readings[0], readings[1]
