"""A reward_model job through the job core: it registers a reward-model entry, which a DPO job refuses as
its base and a further reward-model job accepts."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from jobs.models import JobState
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import ModelEntry, ModelKind
from training.services.jobs import training_job_launch
from training.services.runner import training_job_run


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_HEARTBEAT_SECONDS = 0.2


@pytest.mark.django_db(transaction=True)
def test_a_reward_model_job_registers_a_reward_model_that_only_reward_jobs_take_as_base(
    tmp_path, project, manager, manager_client
):
    version = dataset_version(project)
    base = tiny_model_entry(tmp_path / "tiny")
    params = tiny_params(tmp_path, method="reward_model")
    job = training_job_launch(params=params, base_model=base, dataset_version=version, created_by=manager)
    assert training_job_run(job_id=job.pk) == JobState.SUCCEEDED
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.traceback
    page = manager_client.get(reverse("job-detail", args=[project.pk, job.pk]))
    assert page.status_code == 200 and b"Accuracy (r_chosen &gt; r_rejected)" in page.content
    entry = ModelEntry.objects.get(produced_by=job)
    assert entry.kind == ModelKind.REWARD_MODEL
    with pytest.raises(ValidationError) as err:
        training_job_launch(params=tiny_params(tmp_path), base_model=entry, dataset_version=version)
    assert "is a reward model" in err.value.message_dict["base_model"][0]
    again = training_job_launch(params=params, base_model=entry, dataset_version=version)
    assert training_job_run(job_id=again.pk) == JobState.SUCCEEDED
