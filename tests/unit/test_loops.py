"""Online loops (``training/services/loops.py``): settings and launch checks, and whole loops of rounds run
in-process on tiny models (generate → label → freeze → train → evaluate; the trained model is the next
round's policy)."""

import json

import pytest
import torch
from django.core.exceptions import ValidationError

from annotation.models import DatasetVersion
from jobs.models import JobState
from tests.training_support import dataset_version, tiny_model_entry
from training.engine.lm.models import load_tokenizer
from training.engine.lm.rewards import load_reward_model
from training.models import Labeller, Location, Loop, LoopRound, LoopStage, ModelEntry, ModelKind, TrainingJob
from training.services.loops import LoopSettings, loop_cancel, loop_create, loop_resume, loop_run, round_dir

TRAIN = {
    "method": "dpo",
    "learning_rate": 1e-3,
    "max_steps": 2,
    "batch_size": 4,
    "max_length": 64,
    "warmup_ratio": 0.0,
    "lora": False,
    "save_steps": None,
    "eval_steps": None,
}


def tiny_reward_entry(folder, *, project=None) -> ModelEntry:
    torch.manual_seed(0)
    tokenizer = load_tokenizer("tiny")
    load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelEntry.objects.create(
        name="tiny-rm",
        kind=ModelKind.REWARD_MODEL,
        location=Location.LOCAL,
        path=str(folder),
        project=project,
    )


@pytest.fixture
def registry(tmp_path, settings, project):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.5
    return {
        "policy": tiny_model_entry(tmp_path / "policy"),
        "reward": tiny_reward_entry(tmp_path / "rm", project=project),
        "version": dataset_version(project, train=8, test=4),
    }


def _settings(**overrides):
    given = {"rounds": 2, "k": 3, "max_new_tokens": 8, "max_prompts": 6, "eval_prompts": 3, "train": TRAIN}
    given.update(overrides)
    return given


def _create(registry, manager, labeller=Labeller.REWARD_MODEL, **overrides):
    return loop_create(
        name="tiny loop",
        prompt_version=registry["version"],
        start_model=registry["policy"],
        reward_model=registry["reward"],
        labeller=labeller,
        settings=_settings(**overrides),
        created_by=manager,
    )


def test_settings_take_the_labellers_defaults_and_name_a_bad_field():
    rso = LoopSettings.for_labeller(Labeller.RSO, {})
    assert (rso.k, rso.rso_accept, rso.rso_beta, rso.pair_rule) == (64, 8, 0.5, "rso")
    assert rso.train["method"] == "sigmoid_norm" and rso.train["gamma"] == 0.05
    with pytest.raises(ValidationError) as bad:
        LoopSettings.for_labeller(Labeller.REWARD_MODEL, {"rounds": 0, "temperature": 3, "pair_rule": "rso"})
    assert {"rounds", "temperature", "pair_rule"} <= set(bad.value.message_dict)
    with pytest.raises(ValidationError) as bad:
        LoopSettings.for_labeller(Labeller.RSO, {"train": {"method": "dpo"}})
    assert "train.method" in bad.value.message_dict
    with pytest.raises(ValidationError) as bad:
        LoopSettings.for_labeller(Labeller.REWARD_MODEL, {"train": {"learning_rate": -1}})
    assert "train.learning_rate" in bad.value.message_dict
    with pytest.raises(ValidationError) as bad:
        LoopSettings.for_labeller(Labeller.RSO, {"k": 4})
    assert "rso_accept" in bad.value.message_dict


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"train": ["dpo"]}, "settings.train"),
        ([("rounds", 2)], "settings"),
        ({"seed": -1}, "seed"),
        ({"seed": "seven"}, "seed"),
        ({"name": "x"}, "settings.name"),
    ],
)
def test_malformed_settings_are_named_not_a_crash(given, field):
    with pytest.raises(ValidationError) as bad:
        LoopSettings.for_labeller(Labeller.REWARD_MODEL, given)
    assert field in bad.value.message_dict


@pytest.mark.django_db
def test_a_loop_needs_a_reward_model_and_held_out_prompts(registry, manager, project):
    with pytest.raises(ValidationError) as bad:
        loop_create(
            name="",
            prompt_version=registry["version"],
            start_model=registry["reward"],
            reward_model=registry["policy"],
            labeller=Labeller.REWARD_MODEL,
            settings=_settings(),
            created_by=manager,
        )
    errors = bad.value.message_dict
    assert (
        "not a language model" in errors["start_model"][0]
        and "not a reward model" in errors["reward_model"][0]
    )
    assert "name" in errors
    no_test = dataset_version(project, train=4, test=0)
    with pytest.raises(ValidationError) as bad:
        loop_create(
            name="x",
            prompt_version=no_test,
            start_model=registry["policy"],
            reward_model=registry["reward"],
            labeller=Labeller.REWARD_MODEL,
            created_by=manager,
        )
    assert "no held-out prompts" in bad.value.message_dict["prompt_version"][0]


@pytest.mark.django_db(transaction=True)
def test_a_reward_model_loop_runs_its_rounds_and_registers_each_version_and_model(registry, manager, project):
    loop = _create(registry, manager)
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    assert loop.result["stopped"] == "ran 2 rounds"
    assert loop.result["baseline"]["n"] == 3 and loop.result["baseline"]["mean_kl"] == 0.0
    rounds = list(LoopRound.objects.filter(loop=loop).order_by("number"))
    assert [r.number for r in rounds] == [1, 2] and all(r.stage == LoopStage.DONE for r in rounds)
    assert rounds[0].policy == registry["policy"] and rounds[1].policy == rounds[0].trained_model
    for number, one in enumerate(rounds, start=1):
        version, job = one.dataset_version, one.training_job
        assert version.rule["source"] == "loop" and version.rule["round"] == number
        assert version.rule["labeller"] == "reward_model" and version.rule["reward_model"] == "tiny-rm"
        assert version.stats["train"] == one.labelling["pairs"] > 0
        assert (
            job.state == JobState.SUCCEEDED
            and job.dataset_version == version
            and job.base_model == one.policy
        )
        assert one.trained_model.produced_by == job
        rows = [e.row for e in version.examples.all()]
        assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
        evaluation = one.evaluation
        assert (
            evaluation["n"] == 3 and 0.0 <= evaluation["win_rate"] <= 1.0 and len(evaluation["examples"]) == 3
        )
        candidates = json.loads((round_dir(loop, number) / "candidates.json").read_text())
        assert [len(c) for c in candidates["candidates"]] == [3] * len(candidates["prompts"])
    assert rounds[1].evaluation["mean_kl"] != 0.0  # the second round's model moved away from the start
    assert DatasetVersion.objects.filter(project=project, rule__source="loop").count() == 2
    assert TrainingJob.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_loop_resumes_at_the_stage_it_stopped_in_without_a_second_version_or_job(registry, manager):
    loop = _create(registry, manager, rounds=1)
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    first = LoopRound.objects.get(loop=loop)
    # As if the worker had died after the training job succeeded, before the evaluation was recorded.
    LoopRound.objects.filter(pk=first.pk).update(stage=LoopStage.TRAIN, evaluation={})
    Loop.objects.filter(pk=loop.pk).update(state=JobState.QUEUED, result={**loop.result})
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    first.refresh_from_db()
    assert first.stage == LoopStage.DONE and first.evaluation["n"] == 3
    assert (
        TrainingJob.objects.count() == 1 and DatasetVersion.objects.filter(rule__source="loop").count() == 1
    )


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_loop_stops_and_a_resumed_one_goes_on(registry, manager):
    loop = _create(registry, manager, rounds=1)
    loop_cancel(loop=loop)
    loop.refresh_from_db()
    assert loop.state == JobState.CANCELLED
    loop_run(loop_id=loop.pk)  # a cancelled loop is not claimed
    assert not LoopRound.objects.filter(loop=loop).exists()
    loop_resume(loop=loop)
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED and LoopRound.objects.get(loop=loop).stage == LoopStage.DONE
    with pytest.raises(ValidationError):
        loop_resume(loop=loop)


@pytest.mark.django_db(transaction=True)
def test_an_rso_loop_records_its_acceptance_rate(registry, manager):
    train = {**TRAIN, "method": "sigmoid_norm"}
    loop = _create(registry, manager, Labeller.RSO, rounds=1, k=8, rso_accept=4, train=train)
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    labelling = LoopRound.objects.get(loop=loop).labelling
    assert 0 < labelling["rso/acceptance_rate"] <= 1 and labelling["rso/accepted_per_prompt"] == 4
    assert labelling["pairs"] <= 2 * labelling["prompts"]
    assert LoopRound.objects.get(loop=loop).training_job.method == "sigmoid_norm"


@pytest.mark.django_db(transaction=True)
def test_a_cream_loop_labels_its_own_samples_and_weighs_round_two_by_consistency(registry, manager):
    train = {**TRAIN, "method": "cream"}
    loop = _create(registry, manager, Labeller.CREAM, k=4, train=train)
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    first, second = LoopRound.objects.filter(loop=loop).order_by("number")
    # the tiny starting policy records no base: round 1 ranks by its likelihood, with nothing to compare
    assert first.labelling["ranked_by"] == {"current": "log-likelihood of tiny-llama", "previous": None}
    assert first.labelling["cream/consistency"] is None
    assert {e.row["consistency"] for e in first.dataset_version.examples.all()} == {1.0}
    trained = first.trained_model.name
    # round 2 ranks by the trained model's implicit reward; the base-less start gives no previous ranking
    assert second.labelling["ranked_by"] == {"current": f"{trained} − tiny-llama", "previous": None}
    assert second.dataset_version.rule["pair_rule"]["rule"] == "implicit_best_worst"
    assert second.training_job.method == "cream" and second.evaluation["n"] == 3


@pytest.mark.django_db(transaction=True)
def test_a_cream_loop_from_a_tuned_policy_weighs_round_two_by_consistency(registry, manager, tmp_path):
    from training.engine.lm.models import load_model

    torch.manual_seed(1)
    model = load_model(registry["policy"].spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a policy that differs from its base
    model.save_pretrained(tmp_path / "tuned")
    load_tokenizer(registry["policy"].spec).save_pretrained(tmp_path / "tuned")
    tuned = ModelEntry.objects.create(
        name="tuned", location=Location.LOCAL, path=str(tmp_path / "tuned"), base=registry["policy"]
    )
    loop = _create(registry, manager, Labeller.CREAM, k=4, train={**TRAIN, "method": "cream"})
    Loop.objects.filter(pk=loop.pk).update(start_model=tuned)
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    first, second = LoopRound.objects.filter(loop=loop).order_by("number")
    assert first.labelling["ranked_by"] == {"current": "tuned − tiny-llama", "previous": None}
    assert {e.row["consistency"] for e in first.dataset_version.examples.all()} == {1.0}
    assert second.labelling["ranked_by"]["previous"] == "tuned − tiny-llama"
    values = [e.row["consistency"] for e in second.dataset_version.examples.all()]
    assert values and all(0.0 <= c <= 1.0 for c in values) and len(set(values)) > 1
    assert second.labelling["cream/consistency"] == pytest.approx(sum(values) / len(values))


@pytest.mark.django_db
def test_cream_compares_with_the_last_rounds_policy_only_when_it_has_a_base(registry, manager):
    from training.services.loops import _cream_rankers

    tuned = ModelEntry.objects.create(
        name="tuned", location=Location.LOCAL, path=registry["policy"].path, base=registry["policy"]
    )
    loop = _create(registry, manager, Labeller.CREAM, train={**TRAIN, "method": "cream"})
    first = LoopRound.objects.create(loop=loop, number=1, policy=tuned)
    assert _cream_rankers(first) == ((tuned, registry["policy"]), None)
    second = LoopRound.objects.create(loop=loop, number=2, policy=registry["policy"])
    assert _cream_rankers(second) == ((registry["policy"], None), (tuned, registry["policy"]))
    LoopRound.objects.filter(pk=first.pk).update(policy=registry["policy"])
    second.refresh_from_db()
    assert _cream_rankers(second) == ((registry["policy"], None), None)  # a base-less model does not rank


@pytest.mark.django_db(transaction=True)
def test_a_loop_can_keep_its_starting_policy_as_every_rounds_reference(registry, manager):
    with pytest.raises(ValidationError) as bad:
        LoopSettings.for_labeller(Labeller.REWARD_MODEL, {"reference": "base"})
    assert "reference" in bad.value.message_dict
    loop = _create(registry, manager, reference="start")
    loop_run(loop_id=loop.pk)
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    first, second = LoopRound.objects.filter(loop=loop).order_by("number")
    assert first.training_job.config.get("reference_model") is None  # round 1 starts from the start itself
    assert second.training_job.config["reference_model"] == registry["policy"].spec
    assert second.training_job.base_model == first.trained_model
