"""Cross-domain preference training (Qi et al.'s OFS and COFS): a driver over the ``dpo`` and
``fast_slow_dpo`` recipes, never a loop of its own.

Domains arrive in order, each a TRL preference file (``split`` train/test).  A share of each domain's
train rows (``validation_fraction``, seeded) is held out as its validation set: it picks the kept fast
module and the COFS weights, so the test rows only ever score the result.

- ``sequential_dpo``: LoRA DPO on domain 1, then on domain 2 from domain 1's merged model, and so on.
- ``ofs``: ``fast_slow_dpo`` per domain, chained the same way.  Each domain keeps its **best fast
  module**: among the stage's checkpoints (every ``checkpoint_every`` steps, and the last), the adapter
  that was fast there with the highest validation accuracy the recipe's own evaluation logged (ties: the
  larger margin, then the later step).  The model after domain d is its base with that module merged
  (the final checkpoint's only when it is the best), and domain d+1 continues from it.
- ``cofs``: every domain's OFS stage trains on the *original* base (the base stays frozen and the data
  arrive in the same order); the kept fast modules are combined linearly on that base,
  ``W₀ + Σ wₖ·scaleₖ·Bₖ·Aₖ`` over the domains seen (``lm/lora.add_weighted_deltas``).  Chained modules
  would not combine: domain 2's delta is relative to W₀ + ΔW₁, so any weight but 1 on ΔW₁ leaves ΔW₂ on a
  base it was never trained on.  Weights: ``weights`` (relative, renormalized over the domains seen), or
  per row the point of a simplex grid (``grid_step``) with the best mean validation accuracy over the
  domains seen so far (ties: the larger mean margin, then grid order).

Every result is read against the original base: a pair is right when
``h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)) > 0`` with π_ref the base, and a
``ForgettingMatrix`` holds, after each domain (rows), every domain's test accuracy (columns).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from training.engine.lm.collate import PackingCollator
from training.engine.lm.data import read_rows, tokenize_rows
from training.engine.lm.lora import add_weighted_deltas, lora_delta, merged_with_adapter
from training.engine.lm.models import load_model, load_tokenizer
from training.engine.lm.refcache import compute_reference
from training.engine.methods import train
from training.engine.objectives.preference import LossTerm
from training.engine.recipes.dpo import evaluate_pairs
from training.engine.recipes.dpo_configs import DPOConfig
from training.engine.recipes.fast_slow_dpo import FAST_FILE, FastSlowDPOConfig
from training.engine.rlhf_reproduction import property_rows, write_rows
from training.engine.runtime.config import ConfigError, require, require_positive
from training.engine.runtime.device import resolve_device
from training.engine.runtime.metrics import read_metrics


class StreamCancelled(Exception):
    """A stage was cancelled (``Watch.should_cancel``): the stream stops where it was."""


@dataclass(frozen=True)
class Watch:
    """What a caller of the stream hears, and how it stops it."""

    on_stage: Callable[[str, str], None] = lambda method, domain: None
    """Called before each stage trains: the method (``sequential_dpo``, ``ofs``, ``cofs``) and domain."""
    should_cancel: Callable[[], bool] | None = None
    """Checked before every step of every stage (``train``'s); True stops the stream."""


def _train(config, watch: Watch):
    result = train(config, should_cancel=watch.should_cancel)
    if result.status == "cancelled":
        raise StreamCancelled(f"{config.output_dir}: cancelled")
    return result


MAX_LENGTH = 512
"""Token cap per side of the evaluated pairs: the stages' own (``PreferenceConfig.max_length``)."""


@dataclass(frozen=True)
class Domain:
    """One domain of the stream."""

    name: str
    data_file: str
    """TRL preference JSONL: ``prompt``/``chosen``/``rejected`` rows, ``split`` train or test."""


@dataclass(frozen=True, kw_only=True)
class CrossDomainSettings:
    """Settings every stage shares; the recipe fields are checked by the recipes' own configs."""

    model: str
    """The original base (a model spec); π_ref of every reported accuracy."""
    learning_rate: float = 1e-3
    """DPO's rate and the slow module's (the fast one's is ``fast_lr_ratio`` times it)."""
    batch_size: int = 8
    """Pairs per optimizer step."""
    max_steps: int = 24
    """Optimizer steps per domain."""
    lora_r: int = 8
    """Rank of every LoRA module (DPO's adapter, OFS's two)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (ΔW = alpha/r · B·A)."""
    beta: float = 0.1
    """DPO's β, also the β of the reported margins."""
    fast_lr_ratio: float = 4.0
    """Fast module's learning rate ÷ the slow one's (``fast_slow_dpo``)."""
    chase_weight: float = 0.1
    """λ of the chase term (``fast_slow_dpo``)."""
    swap_patience: int = 1
    """Steps the slow module must lead before the roles swap (``fast_slow_dpo``)."""
    checkpoint_every: int = 6
    """OFS/COFS evaluate on the validation rows and write a checkpoint every this many steps."""
    validation_fraction: float = 0.25
    """Share of each domain's train rows held out for choosing modules and weights."""
    weights: tuple[float, ...] | None = None
    """COFS weights, one per domain (relative); None = chosen on the validation mix from the grid."""
    grid_step: float = 0.25
    """Spacing of the simplex grid COFS searches."""
    lr_scheduler: str = "constant"
    """Each stage's schedule (constant: a new domain is not a warm restart)."""
    warmup_ratio: float = 0.0
    """Each stage's warmup share."""
    precision: str = "fp32"
    """fp32 or bf16 (autocast), for the stages."""
    device: str = "auto"
    """Where stages and evaluations run."""
    seed: int = 0
    """Seeds every stage and the validation split."""

    def __post_init__(self) -> None:
        fraction = self.validation_fraction
        ok = isinstance(fraction, int | float) and 0 < fraction < 1
        require(ok, "validation_fraction", f"must lie in (0, 1), got {fraction!r}")
        require_positive(self.grid_step, "grid_step")
        k = 1 / self.grid_step
        require(k >= 1 and abs(k - round(k)) < 1e-9, "grid_step", f"must be 1/k, got {self.grid_step}")
        require_positive(self.checkpoint_every, "checkpoint_every", integer=True)
        require_positive(self.max_steps, "max_steps", integer=True)  # each stage's epochs cap: named here
        if self.weights is not None:
            for i, w in enumerate(self.weights):
                ok = isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                require(ok, f"weights[{i}]", f"must be a finite number ≥ 0, got {w!r}")
            require(
                bool(self.weights) and self.weights[0] > 0,
                "weights[0]",
                "must be > 0 (each row renormalizes the weights of the domains seen so far)",
            )
        self.stage(FastSlowDPOConfig, model=self.model, train_file="check.jsonl", output_dir="check")

    def stage(self, cls, **paths):
        """The recipe config of one stage (``paths``: model, train_file, eval_file, output_dir, …)."""
        shared = {f.name for f in fields(cls)}
        mine = {k: v for k, v in asdict(self).items() if k in shared and k not in {"model"}}
        extra = {} if cls is FastSlowDPOConfig else {"lora": True}
        return cls(**mine, **extra, **paths, epochs=self.max_steps)


def check_weights(weights, n_domains: int) -> None:
    """One weight per domain (the rest ``CrossDomainSettings`` checked)."""
    if weights is not None and len(weights) != n_domains:
        raise ConfigError(f"weights: expected {n_domains} (one per domain), got {len(weights)}")


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Every ``n``-vector of multiples of ``step`` summing to 1, the first weight largest first."""
    k = round(1 / step)

    def parts(left: int, slots: int):
        if slots == 1:
            yield (left,)
            return
        for first in range(left, -1, -1):
            for rest in parts(left - first, slots - 1):
                yield (first, *rest)

    return [tuple(c / k for c in counts) for counts in parts(k, n)]


@dataclass(frozen=True)
class FastModule:
    """The fast adapter a domain keeps."""

    domain: str
    adapter: str
    """Its peft folder (``checkpoint-N/m1`` or ``m2``)."""
    base: str
    """The model spec it is a delta of."""
    step: int
    validation_accuracy: float


@dataclass(frozen=True)
class ForgettingMatrix:
    """``accuracy[i][j]``: domain j's held-out pairwise accuracy after training through domain i."""

    method: str
    domains: tuple[str, ...]
    accuracy: tuple[tuple[float, ...], ...]
    weights: tuple[tuple[float, ...], ...] = ()
    """COFS: the combination of each row (over the domains seen)."""
    modules: tuple[FastModule, ...] = ()
    """OFS and COFS: each domain's kept fast module."""

    def final(self) -> dict[str, float]:
        """Every domain's accuracy after the last domain."""
        return dict(zip(self.domains, self.accuracy[-1], strict=True))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Split:
    """A domain and the files its stages read: train rows, and the validation rows held out of them."""

    domain: Domain
    train_file: str
    validation_file: str


def split_domains(domains: list[Domain], settings: CrossDomainSettings, work: Path) -> list[Split]:
    """Write each domain's train and validation files (a seeded share of its train rows)."""
    names = [d.name for d in domains]
    require(bool(domains), "domains", "need at least one")
    require(len(set(names)) == len(names) and all(names), "domains", f"names must be distinct: {names}")
    (work / "data").mkdir(parents=True, exist_ok=True)
    out = []
    for d in domains:
        rows = read_rows(d.data_file, "train")
        random.Random(settings.seed).shuffle(rows)
        cut = max(1, round(len(rows) * settings.validation_fraction))
        require(len(rows) > cut, "validation_fraction", f"domain {d.name}: leaves no train rows")
        val = write_rows(work / "data" / f"{d.name}-validation.jsonl", rows[:cut])
        out.append(Split(d, write_rows(work / "data" / f"{d.name}-train.jsonl", rows[cut:]), val))
    return out


@dataclass
class Evaluator:
    """Pairwise accuracy of any model on every domain's validation and test pairs, against the base."""

    settings: CrossDomainSettings
    splits: list[Split]
    pairs: dict = field(default_factory=dict)
    refs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.settings.device)
        tokenizer = load_tokenizer(self.settings.model)
        self.collator = PackingCollator(tokenizer.pad_token_id or 0, None, self.device)
        base = load_model(self.settings.model).to(self.device)
        for s in self.splits:
            test = read_rows(s.domain.data_file, "test")
            for split, rows in (("validation", read_rows(s.validation_file)), ("test", test)):
                pairs = tokenize_rows(rows, tokenizer, max_length=MAX_LENGTH)[0]
                require(bool(pairs), "domains", f"{s.domain.name}: no {split} pair")
                key = (s.domain.name, split)
                self.pairs[key] = pairs
                self.refs[key] = compute_reference(base, pairs, self.collator, batch_size=self.batch)

    @property
    def batch(self) -> int:
        return self.settings.batch_size

    def read(self, model, split: str, domains: list[str]) -> list[tuple[float, float]]:
        """(accuracy, mean β·h) of each domain's ``split`` pairs under ``model``."""
        model = model.to(self.device)
        terms = [LossTerm("dpo", 1.0, {"beta": self.settings.beta})]
        out = []
        for name in domains:
            key = (name, split)
            m = evaluate_pairs(
                model, self.pairs[key], self.refs[key], self.collator, terms, batch_size=self.batch
            )
            out.append((m["eval/rewards/accuracies"], m["eval/rewards/margins"]))
        return out

    def row(self, model) -> tuple[float, ...]:
        return tuple(acc for acc, _ in self.read(model, "test", [s.domain.name for s in self.splits]))


def _setup(domains, settings, work, evaluator):
    work = Path(work)
    splits = split_domains(list(domains), settings, work)
    return work, splits, evaluator or Evaluator(settings, splits)


def sequential_dpo(
    domains, settings: CrossDomainSettings, work: Path, *, evaluator=None, watch: Watch = Watch()
) -> ForgettingMatrix:
    """LoRA DPO domain after domain, each stage from the previous stage's merged ``final/``."""
    work, splits, evaluator = _setup(domains, settings, work, evaluator)
    model, rows = settings.model, []
    for s in splits:
        watch.on_stage("sequential_dpo", s.domain.name)
        out = work / "sequential" / s.domain.name
        config = settings.stage(DPOConfig, model=model, **_files(s, out, work))
        model = f"local:{_train(config, watch).final_model}"
        rows.append(evaluator.row(load_model(model)))
    return ForgettingMatrix("sequential_dpo", _names(splits), tuple(rows))


def _files(s: Split, out: Path, work: Path) -> dict:
    return {
        "train_file": s.train_file,
        "eval_file": s.validation_file,
        "output_dir": str(out),
        "ref_cache_dir": str(work / "ref"),
    }


def _names(splits: list[Split]) -> tuple[str, ...]:
    return tuple(s.domain.name for s in splits)


def best_fast_module(output_dir: Path, domain: str, base: str) -> FastModule:
    """The adapter that was fast at the checkpoint whose logged validation accuracy is highest."""
    evals = {
        r["step"]: r for r in read_metrics(output_dir / "metrics.jsonl") if "eval/rewards/accuracies" in r
    }
    found = []
    for step, r in evals.items():
        checkpoint = output_dir / f"checkpoint-{step}"
        if (checkpoint / FAST_FILE).is_file():
            found.append((r["eval/rewards/accuracies"], r["eval/rewards/margins"], step, checkpoint))
    require(bool(found), "checkpoint_every", f"{output_dir}: no evaluated checkpoint")
    accuracy, _, step, checkpoint = max(found)
    fast = (checkpoint / FAST_FILE).read_text().strip()
    return FastModule(domain, str(checkpoint / fast), base, step, accuracy)


def fast_stage(s: Split, settings, work: Path, out: Path, base: str, watch: Watch = Watch()) -> FastModule:
    """One ``fast_slow_dpo`` stage on ``base``, evaluated and saved every ``checkpoint_every`` steps; every
    checkpoint is kept (``keep_checkpoints=None``), since the best fast module is chosen among them all
    after the stage and COFS combines the kept modules from their checkpoint folders."""
    every = settings.checkpoint_every
    config = settings.stage(
        FastSlowDPOConfig,
        model=base,
        eval_steps=every,
        save_steps=every,
        keep_checkpoints=None,
        **_files(s, out, work),
    )
    _train(config, watch)
    return best_fast_module(out, s.domain.name, base)


def ofs(
    domains, settings: CrossDomainSettings, work: Path, *, evaluator=None, watch: Watch = Watch()
) -> ForgettingMatrix:
    """Fast-slow DPO domain after domain; each stage starts from its base with the previous domain's best
    fast module merged (saved as ``ofs/<domain>/kept``)."""
    work, splits, evaluator = _setup(domains, settings, work, evaluator)
    base, rows, modules = settings.model, [], []
    for s in splits:
        watch.on_stage("ofs", s.domain.name)
        out = work / "ofs" / s.domain.name
        module = fast_stage(s, settings, work, out, base, watch)
        merged = merged_with_adapter(load_model(base), module.adapter)
        merged.save_pretrained(out / "kept", safe_serialization=True)
        load_tokenizer(base).save_pretrained(out / "kept")
        modules.append(module)
        rows.append(evaluator.row(merged))
        base = f"local:{out / 'kept'}"
    return ForgettingMatrix("ofs", _names(splits), tuple(rows), modules=tuple(modules))


def combined(base: str, modules: list[FastModule], weights) -> torch.nn.Module:
    """The base with the modules' deltas added, weighted."""
    return add_weighted_deltas(load_model(base), [lora_delta(m.adapter) for m in modules], list(weights))


def cofs(
    domains, settings: CrossDomainSettings, work: Path, *, evaluator=None, watch: Watch = Watch()
) -> ForgettingMatrix:
    """Each domain's fast modules trained on the original base in stream order; after domain d, the kept
    modules of domains 1…d combined linearly (given weights renormalized, or the grid's best)."""
    check_weights(settings.weights, len(domains))
    work, splits, evaluator = _setup(domains, settings, work, evaluator)
    rows, modules, chosen = [], [], []
    for d, s in enumerate(splits, start=1):
        watch.on_stage("cofs", s.domain.name)
        out = work / "cofs" / s.domain.name
        modules.append(fast_stage(s, settings, work, out, settings.model, watch))
        weights = choose_weights(evaluator, settings, modules, _names(splits)[:d])
        chosen.append(weights)
        rows.append(evaluator.row(combined(settings.model, modules, weights)))
    return ForgettingMatrix("cofs", _names(splits), tuple(rows), tuple(chosen), tuple(modules))


def choose_weights(evaluator: Evaluator, settings, modules: list[FastModule], seen) -> tuple[float, ...]:
    if settings.weights is not None:
        given = settings.weights[: len(modules)]
        return tuple(w / sum(given) for w in given)
    scored = []
    for i, weights in enumerate(simplex_grid(len(modules), settings.grid_step)):
        read = evaluator.read(combined(settings.model, modules, weights), "validation", list(seen))
        scored.append((sum(a for a, _ in read) / len(read), sum(m for _, m in read) / len(read), -i, weights))
    return max(scored)[3]


@dataclass(frozen=True)
class Reproduction:
    """The forgetting matrices of the three methods on domains A then B."""

    sequential: ForgettingMatrix
    ofs: ForgettingMatrix
    cofs: ForgettingMatrix

    def after_last(self) -> dict[str, dict[str, float]]:
        """Method → domain → held-out accuracy after the last domain."""
        return {m.method: m.final() for m in (self.sequential, self.ofs, self.cofs)}

    def to_dict(self) -> dict:
        return asdict(self)


def domain_rows(n: int, *, seed: int, domain: str, split: str, conflict: float = 0.5) -> list[dict]:
    """A: chosen mentions ``z``, rejected does not (``property_rows``).  B ("shout …" prompts): chosen
    mentions ``q``, and a ``conflict`` share of the rejected responses (seeded) mentions ``z``, so B's
    lesson partly undoes A's."""
    rows = property_rows(n, seed=seed, target="z" if domain == "A" else "q", split=split)
    if domain == "B":
        rng = random.Random(seed + 7)
        for r in rows:
            r["prompt"] = r["prompt"].replace("write", "shout")
            cut = rng.randint(0, len(r["rejected"]))
            if rng.random() < conflict:
                r["rejected"] = r["rejected"][:cut] + "z" + r["rejected"][cut:]
    return rows


def reproduce(
    work: Path,
    *,
    seed: int = 0,
    model: str = "tiny",
    n_train: int = 64,
    n_test: int = 32,
    conflict: float = 0.5,
    watch: Watch = Watch(),
    **settings,
) -> Reproduction:
    """Domains A then B (``domain_rows``), the three methods from the same base with the same settings
    (``CrossDomainSettings`` fields as keywords; seed ``seed``)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    domains = []
    for i, name in enumerate(("A", "B")):
        rows = domain_rows(n_train, seed=seed * 10 + i, domain=name, split="train", conflict=conflict)
        rows += domain_rows(n_test, seed=seed * 10 + i + 500, domain=name, split="test", conflict=conflict)
        domains.append(Domain(name, write_rows(work / f"{name}.jsonl", rows)))
    return compare(domains, CrossDomainSettings(model=model, seed=seed, **settings), work, watch=watch)


def compare(domains, settings: CrossDomainSettings, work: Path, *, watch: Watch = Watch()) -> Reproduction:
    """The three methods on the same domains, splits and settings, read by one evaluator."""
    check_weights(settings.weights, len(domains))
    work = Path(work)
    evaluator = Evaluator(settings, split_domains(list(domains), settings, work))
    return Reproduction(
        sequential_dpo(domains, settings, work, evaluator=evaluator, watch=watch),
        ofs(domains, settings, work, evaluator=evaluator, watch=watch),
        cofs(domains, settings, work, evaluator=evaluator, watch=watch),
    )


STAGES_PER_DOMAIN = 3
"""``compare`` trains each domain once per method."""
