"""``manage.py launch_job CONFIG.yaml --dataset-version ID [--base-model ID|NAME] [--queue cpu] [--wait]``."""

import time

import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.models import DatasetVersion
from training.models import ModelEntry, TrainingJob
from training.services.jobs import training_job_launch
from training.services.registry import model_entry_ensure_bundled


def _base_model(ref: str | None, config: dict) -> ModelEntry:
    if ref:
        found = (
            ModelEntry.objects.filter(pk=int(ref)) if ref.isdigit() else ModelEntry.objects.filter(name=ref)
        )
        if not found.exists():
            raise CommandError(f"--base-model {ref}: no such model in the registry")
        return found.get()
    model = str(config.get("model", "bundled"))
    if model.startswith("bundled"):
        return model_entry_ensure_bundled()
    path = model.removeprefix("local:")
    entry = ModelEntry.objects.filter(path=path).first()
    if entry is None:
        raise CommandError(f"model {model!r} is not in the registry: register it, or pass --base-model")
    return entry


class Command(BaseCommand):
    help = "Queue a training job from an engine YAML config (paths are filled in by the studio)."

    def add_arguments(self, parser):
        parser.add_argument(
            "config", help="YAML with method and hyperparameters (python -m training.engine format)"
        )
        parser.add_argument(
            "--dataset-version", type=int, required=True, help="DatasetVersion id to train on"
        )
        parser.add_argument("--base-model", help="ModelEntry id or name (default: the config's model)")
        parser.add_argument("--queue", default="cpu", choices=["cpu", "gpu"])
        parser.add_argument(
            "--wait", action="store_true", help="wait until the job ends; exit 1 unless it succeeded"
        )
        parser.add_argument(
            "--poll", type=float, default=2.0, help="seconds between state checks with --wait"
        )

    def handle(self, *args, **opts):
        try:
            with open(opts["config"], encoding="utf-8") as fh:
                config = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CommandError(f"{opts['config']}: {exc}") from exc
        if not isinstance(config, dict):
            raise CommandError(f"{opts['config']}: expected a mapping of config fields")
        version = DatasetVersion.objects.filter(pk=opts["dataset_version"]).first()
        if version is None:
            raise CommandError(f"--dataset-version {opts['dataset_version']}: no such dataset version")
        base = _base_model(opts.get("base_model"), config)
        try:
            job = training_job_launch(
                params=config, base_model=base, dataset_version=version, queue=opts["queue"]
            )
        except ValidationError as exc:
            problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError(f"invalid job: {problems}") from exc
        self.stdout.write(f"queued job {job.pk} ({job.method}) on queue {job.queue}")
        if opts["wait"]:
            self._wait(job.pk, opts["poll"])

    def _wait(self, job_id: int, poll: float) -> None:
        last = None
        while True:
            job = TrainingJob.objects.get(pk=job_id)
            if (job.state, job.step) != last:
                self.stdout.write(f"job {job.pk}: {job.state} step {job.step}/{job.total_steps or '?'}")
                last = (job.state, job.step)
            if job.finished:
                break
            time.sleep(poll)
        if job.state != "succeeded":
            raise CommandError(f"job {job.pk} {job.state}: {job.error}")
