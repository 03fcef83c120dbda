"""A real `celery worker` (the compose file's command) runs a two-round reward-model loop on tiny models;
the worker is killed in round 2 and a new one finishes the loop, each round's version and model registered
once."""

import os
import signal

import pytest

from annotation.models import DatasetVersion
from jobs.models import FINISHED_STATES, JobState
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import compose_command, native_env, running, wait_for
from tests.training_support import dataset_version, tiny_model_entry
from tests.unit.test_loops import TRAIN, tiny_reward_entry
from training.models import Labeller, Loop, LoopRound, LoopStage, ModelEntry, TrainingJob
from training.services.loops import loop_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _env(tmp_path):
    return native_env(
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TRAINING_HEARTBEAT_SECONDS="0.5",
        TRAINING_HEARTBEAT_STALE_SECONDS="8",
        JOB_RECOVERY_SECONDS="1",
        TRAINING_METRICS_FLUSH_SECONDS="0.2",
    )


def _in_round_two_training(loop_id):
    def check():
        current = LoopRound.objects.filter(loop_id=loop_id, number=2).select_related("training_job").first()
        return current is not None and current.training_job is not None and current.training_job.step >= 6

    return check


def test_a_loop_killed_in_round_two_finishes_on_a_new_worker_with_each_round_registered_once(
    settings, tmp_path
):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    user = UserFactory(username="looper")
    project = ProjectFactory()
    MembershipFactory(project=project, user=user, role="manager")
    loop = loop_create(
        name="killed loop",
        prompt_version=dataset_version(project, train=8, test=4),
        start_model=tiny_model_entry(tmp_path / "policy"),
        reward_model=tiny_reward_entry(tmp_path / "rm", project=project),
        labeller=Labeller.REWARD_MODEL,
        settings={
            "rounds": 2,
            "k": 3,
            "max_new_tokens": 8,
            "max_prompts": 6,
            "eval_prompts": 3,
            "train": {**TRAIN, "max_steps": 60, "epochs": 1000, "save_steps": 3},
        },
        created_by=user,
    )
    first, second = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    with running(compose_command("worker"), env=_env(tmp_path), log_path=first) as worker:
        wait_for(_in_round_two_training(loop.pk), timeout=240, what="round 2 to train", log_path=first)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    killed = Loop.objects.get(pk=loop.pk)
    assert killed.state == JobState.RUNNING and killed.round_number == 2
    with running(compose_command("worker"), env=_env(tmp_path), log_path=second):
        wait_for(
            lambda: Loop.objects.get(pk=loop.pk).state in FINISHED_STATES,
            timeout=300,
            what="the new worker to resume and finish the loop",
            log_path=second,
        )
    loop.refresh_from_db()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    assert loop.attempts == 2 and loop.result["stopped"] == "ran 2 rounds"
    rounds = list(LoopRound.objects.filter(loop=loop).order_by("number"))
    assert [(r.number, r.stage) for r in rounds] == [(1, LoopStage.DONE), (2, LoopStage.DONE)]
    assert DatasetVersion.objects.filter(project=project, rule__source="loop").count() == 2
    assert TrainingJob.objects.count() == 2
    assert ModelEntry.objects.filter(produced_by__isnull=False).count() == 2
    resumed = rounds[1].training_job
    assert resumed.state == JobState.SUCCEEDED and resumed.attempts == 2 and resumed.step == 60
    assert rounds[1].policy == rounds[0].trained_model and rounds[1].evaluation["n"] == 3
