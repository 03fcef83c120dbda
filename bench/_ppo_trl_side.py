"""TRL's side of bench/ppo_throughput.py: ``trl.experimental.ppo.PPOTrainer`` (TRL 1.12.0) on the same work.

Runs in its own environment (``bench/.venv-trl-ppo``, built by the driver): TRL 1.12 is the last release with
a PPO trainer, and the project's own environment has TRL 1.16.  Takes the path of the driver's settings file
(JSON: model folders, prompt token ids, sizes) and prints one JSON line of results.

The work: policy and reference = the bundled SmolLM2-135M-Instruct folder; reward and value model = the
driver's seeded one-label ``AutoModelForSequenceClassification`` folder, loaded twice; fp32, SDPA attention,
CPU, no gradient checkpointing, no sample generations, no eval, no saving, no reporting.  ``stop_token=None``:
every response is generated to the full ``response_length`` (TRL neither stops nor truncates at EOS).  The
pad token is a new ``[PAD]`` (as TRL's own PPO example script does): TRL masks every pad-id position in the
query-response and zero-fills its id before the embedding, so with pad = EOS (the bundled tokenizer's
setting) it would also mask the prompt's ``<|im_end|>`` turn ends; no embedding resize is needed.

How a PPO step is split (TRL's ``train()`` is one loop with no per-phase hooks):

* a step runs from ``on_train_begin`` (the first) or the previous ``on_step_end`` to its own
  ``on_step_end`` (after the step's log, the LR step and TRL's own ``gc.collect``/cache clearing);
* its rollout ends at the first grad-enabled call of the module's ``forward`` (the first PPO minibatch's
  policy+value forward), wrapped here: the rollout is generation, the reference, value and reward forwards,
  KL rewards and GAE, exactly what TRL does under ``torch.no_grad()`` before its PPO epochs;
* the update is the rest: ``num_ppo_epochs × num_mini_batches`` forward/backward/AdamW steps and the step's
  metrics; ``batch_generation`` is wrapped too, to report the generation share of the rollout and the
  tokens it produced.

Setup (loading four models, building the trainer and its optimizer) is timed apart, up to ``on_train_begin``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _retain_freed_memory() -> None:
    """The allocator setting our engine uses (``training/engine/runtime/memory.py``), loaded by path: the
    ``training`` package's dependencies are not in this environment.  Both sides run with it."""
    path = ROOT / "training" / "engine" / "runtime" / "memory.py"
    spec = importlib.util.spec_from_file_location("_prefstudio_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.retain_freed_memory()


class _Phases:
    """Per-PPO-step wall times, filled by the wrapped TRL functions and the trainer callback."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.t0, self.setup_s = time.perf_counter(), 0.0
        self.start = self.rollout_end = None
        self.generate_s, self.tokens = 0.0, 0
        self.logs: list[dict] = []

    def begin(self) -> None:
        self.start, self.rollout_end, self.generate_s, self.tokens = time.perf_counter(), None, 0.0, 0

    def end(self) -> None:
        now = time.perf_counter()
        rollout = (self.rollout_end or now) - self.start
        self.steps.append(
            {
                "wall_s": now - self.start,
                "rollout_s": rollout,
                "update_s": now - self.start - rollout,
                "generate_s": self.generate_s,
                "tokens": self.tokens,
            }
        )
        self.begin()


def _instrument(ppo_module, phases: _Phases) -> None:
    import torch

    generation, forward = ppo_module.batch_generation, ppo_module.forward

    def timed_generation(model, queries, *args, **kwargs):
        tick = time.perf_counter()
        query_responses, logits = generation(model, queries, *args, **kwargs)
        phases.generate_s += time.perf_counter() - tick
        phases.tokens += query_responses.shape[0] * (query_responses.shape[1] - queries.shape[1])
        return query_responses, logits

    def marked_forward(model, query_responses, pad_token_id):
        if torch.is_grad_enabled() and phases.rollout_end is None:
            phases.rollout_end = time.perf_counter()
        return forward(model, query_responses, pad_token_id)

    ppo_module.batch_generation, ppo_module.forward = timed_generation, marked_forward


def _models(s: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(s["policy"], padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    policy = AutoModelForCausalLM.from_pretrained(s["policy"], **kwargs)
    ref = AutoModelForCausalLM.from_pretrained(s["policy"], **kwargs)
    reward, value = (
        AutoModelForSequenceClassification.from_pretrained(s["reward"], num_labels=1, **kwargs)
        for _ in range(2)
    )
    return tokenizer, policy, ref, reward, value


def _config(s: dict, output_dir: str):
    from trl.experimental.ppo import PPOConfig

    rollout = s["batch"] * s["num_mini_batches"]
    return PPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=rollout,  # TRL's rollout is this × grad. accumulation (1 here) ...
        gradient_accumulation_steps=1,
        num_mini_batches=s["num_mini_batches"],  # ... split into this many optimizer steps per PPO epoch
        num_ppo_epochs=s["num_ppo_epochs"],
        total_episodes=s["steps"] * rollout,
        local_rollout_forward_batch_size=rollout,
        response_length=s["max_new_tokens"],
        stop_token=None,
        missing_eos_penalty=None,
        temperature=s["temperature"],
        kl_coef=s["kl_coef"],
        cliprange=s["cliprange"],
        cliprange_value=s["cliprange_value"],
        vf_coef=s["vf_coef"],
        gamma=s["gamma"],
        lam=s["lam"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        num_sample_generations=0,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=s["seed"],
    )


def run(s: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.ppo import PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    phases = _Phases()
    _instrument(ppo_module, phases)

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            phases.setup_s = time.perf_counter() - phases.t0
            phases.begin()

        def on_step_end(self, args, state, control, **kwargs):
            phases.end()

        def on_log(self, args, state, control, logs=None, **kwargs):
            phases.logs.append(dict(logs or {}))

    torch.manual_seed(s["seed"])
    phases.t0, cpu = time.perf_counter(), time.process_time()
    tokenizer, policy, ref, reward, value = _models(s)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PPOTrainer(
            args=_config(s, str(Path(tmp) / "trl")),
            processing_class=tokenizer,
            model=policy,
            ref_model=ref,
            reward_model=reward,
            value_model=value,
            train_dataset=Dataset.from_dict({"input_ids": s["prompt_ids"]}),
            callbacks=[Clock()],
        )
        trainer.train()
    wall, cpu = time.perf_counter() - phases.t0, time.process_time() - cpu
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "setup_s": phases.setup_s,
        "steps": phases.steps,
        "scores": [log.get("objective/scores") for log in phases.logs],
    }


def main() -> None:
    settings = json.loads(Path(sys.argv[1]).read_text())
    import torch

    _retain_freed_memory()
    torch.set_num_threads(settings["threads"])
    out = run(settings)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["versions"] = {name: _version(name) for name in ("trl", "transformers", "accelerate", "torch")}
    print(json.dumps(out))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    main()
