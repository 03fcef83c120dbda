"""A job on the ``slurm`` queue: no worker takes it; its ``sbatch`` script, run as Slurm runs it (``srun``
and ``scontrol`` stand-ins that run the command on this machine), trains with torchrun and reports to the
job over the API — metrics once per step, checkpoints, the registered model, the outcome — and a cancel
from the studio stops it with its checkpoint.  Reports the job cannot take are 4xx naming why."""

import json
import os
import socket
import stat
import subprocess
import sys
import threading

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from jobs.models import JobState
from prefstudio.services import api_token_create
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.integration.native import ROOT, wait_for
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import Artifact, ArtifactKind, MetricPoint, ModelEntry, TrainingJob
from training.services.evaluation import evaluation_report
from training.services.jobs import training_job_cancel, training_job_launch
from training.services.paths import log_path
from training.services.slurm import sbatch_script

pytestmark = pytest.mark.django_db(transaction=True)

SRUN = '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n'
SCONTROL = "#!/bin/bash\necho 127.0.0.1\n"


@pytest.fixture
def setup(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.TRAINING_SHARED_STORAGE = True
    user = UserFactory(username="cluster")
    project = ProjectFactory()
    MembershipFactory(project=project, user=user, role="manager")
    return {
        "user": user,
        "token": api_token_create(user=user),
        "version": dataset_version(project),
        "base": tiny_model_entry(tmp_path / "tiny"),
    }


def _launch(setup, tmp_path, queue="slurm", **overrides) -> TrainingJob:
    params = tiny_params(tmp_path, batch_size=5, device="cpu", **overrides)
    return training_job_launch(
        params=params,
        base_model=setup["base"],
        dataset_version=setup["version"],
        created_by=setup["user"],
        queue=queue,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sbatch(script: str, tmp_path, token: str) -> subprocess.Popen:
    """Run the script as an allocation of one node would, with stand-ins for srun and scontrol."""
    shims = tmp_path / "slurm-bin"
    shims.mkdir(exist_ok=True)
    for name, body in (("srun", SRUN), ("scontrol", SCONTROL)):
        (shims / name).write_text(body)
        (shims / name).chmod(stat.S_IRWXU)
    (tmp_path / "job.sbatch").write_text(script)
    env = {
        **os.environ,
        "PATH": f"{shims}:{os.environ['PATH']}",
        "PREFSTUDIO_TOKEN": token,
        "PREFSTUDIO_PYTHON": sys.executable,
        "PREFSTUDIO_RDZV_PORT": str(_free_port()),
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NODELIST": "node001",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "TQDM_DISABLE": "1",
    }
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen(
        ["bash", str(tmp_path / "job.sbatch")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen, timeout: int = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def test_the_sbatch_script_trains_the_job_and_reports_everything_to_it(
    setup, tmp_path, live_server, celery_eager
):
    job = _launch(setup, tmp_path, processes_per_node=2, max_steps=5, save_steps=2)
    assert job.state == JobState.QUEUED and job.attempts == 0  # no worker took it
    script = sbatch_script(job, studio_url=live_server.url)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "srun --kill-on-bad-exit=1" in script and "--nproc-per-node=2" in script
    assert f"{live_server.url}/api/jobs/{job.pk}/report" in script
    _finish(_sbatch(script, tmp_path, setup["token"]))

    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.step == 5 and job.total_steps == 5 and job.attempts == 1 and job.worker_host == "slurm"
    steps = MetricPoint.objects.filter(job=job, name="loss").order_by("step").values_list("step", flat=True)
    assert list(steps) == [1, 2, 3, 4, 5]  # rank 0 alone reports, each step once
    world = set(MetricPoint.objects.filter(job=job, name="dist/world_size").values_list("value", flat=True))
    assert world == {2.0}
    checkpoints = Artifact.objects.filter(job=job, kind=ArtifactKind.CHECKPOINT)
    # checkpoint-2 was reported, then deleted by the run (keep_checkpoints 2): its row went with it
    assert sorted(a.path.rsplit("/", 1)[1] for a in checkpoints) == ["checkpoint-4", "checkpoint-5"]
    assert ModelEntry.objects.filter(produced_by=job).exists()
    assert "a run outside the studio (Slurm) took the job" in log_path(job).read_text()
    report = evaluation_report(job=job)  # written by a worker's task once the run reported success
    assert report is not None and report["pairs"] > 0 and report["implicit_accuracy"] is not None


def test_a_cancel_from_the_studio_stops_the_run_with_its_checkpoint(setup, tmp_path, live_server):
    job = _launch(setup, tmp_path, max_steps=5000, epochs=1000, save_steps=None)
    process = _sbatch(sbatch_script(job, studio_url=live_server.url), tmp_path, setup["token"])
    threading.Thread(target=process.communicate, daemon=True).start()  # keep its pipe from filling
    try:
        wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step >= 2, timeout=180, what="2 steps reported")
        training_job_cancel(job=job)
        wait_for(lambda: process.poll() is not None, timeout=120, what="the run to stop")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and 2 <= job.step < 5000
    checkpoint = Artifact.objects.get(job=job, kind=ArtifactKind.CHECKPOINT)
    assert checkpoint.path.endswith(f"checkpoint-{job.step}")


def _report(token: str, job_id: int, body) -> tuple[int, dict]:
    response = Client().post(
        f"/api/jobs/{job_id}/report",
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code, response.json()


def test_reports_the_job_cannot_take_are_refused_naming_why(setup, tmp_path, settings):
    token = setup["token"]
    on_workers = _launch(setup, tmp_path, queue="cpu")
    status, body = _report(token, on_workers.pk, {"attempt": None})
    assert status == 409 and "its worker reports it" in body["detail"]

    job = _launch(setup, tmp_path)
    status, body = _report(token, job.pk, {"attempt": None})
    assert status == 200 and body == {"attempt": 1, "cancel": False}
    assert _report(token, job.pk, {"attempt": None})[0] == 409  # running: a second run cannot take it
    status, body = _report(token, job.pk, {"attempt": 1, "saved": ["../../../etc"]})
    assert status == 400 and "not checkpoint-N" in body["detail"]
    status, body = _report(token, job.pk, {"attempt": 1, "saved": ["checkpoint-3"]})
    assert status == 400 and "not in the job's output folder" in body["detail"]
    status, body = _report(token, job.pk, {"attempt": 1, "points": [{"step": 1, "loss": "high"}]})
    assert status == 400 and body["detail"].startswith("points[0].loss")
    assert _report(token, job.pk, {"attempt": 7, "points": [{"step": 1, "loss": 0.5}]})[0] == 409
    assert not MetricPoint.objects.filter(job=job).exists()  # nothing of a refused report was kept

    status, body = _report(token, job.pk, {"attempt": 1, "points": [{"step": 1, "loss": 0.5}]})
    assert status == 200 and MetricPoint.objects.get(job=job, name="loss").value == 0.5
    outsider = api_token_create(user=UserFactory(username="outsider"))
    assert _report(outsider, job.pk, {"attempt": 1})[0] == 404

    settings.TRAINING_SHARED_STORAGE = False
    with pytest.raises(ValidationError) as refused:
        _launch(setup, tmp_path)
    assert "TRAINING_SHARED_STORAGE" in refused.value.message_dict["queue"][0]
