"""Preference training across domains (``docs/domains.md``): a project's dataset versions as a stream of
domains, trained in order by sequential DPO, OFS and COFS from one base model
(``engine/cross_domain.compare``), each method's forgetting matrix recorded on the ``DomainStream`` row.

A stream is a job on the job core (``DOMAIN_STREAM_JOBS``): a worker that dies has its stream requeued,
and the next attempt starts over in a folder of its own (the three methods share splits and an evaluator,
so a half-finished attempt's stages are not reused).  Its stage line names the method and domain training.
"""

from __future__ import annotations

import traceback
from dataclasses import fields

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db.models import Q

from annotation.models import DatasetVersion, TaskType
from jobs.leases import LeaseLost, job_claim
from jobs.models import JobState
from jobs.recovery import JobKind, seconds_setting, setting
from jobs.sending import job_send_on_commit
from training.engine import ConfigError

from ..models import DomainStream, ModelEntry, ModelKind, Queue
from ..selectors import models_for_user
from .paths import artifact_root, new_run_token
from .threads import torch_threads

TEXT_PAIR_TYPES = (TaskType.PAIRWISE, TaskType.RANKING, TaskType.STEPWISE, TaskType.FACTUALITY)
DEFAULTS = {"learning_rate": 1e-4}
"""Over the engine's defaults (tuned for the tiny test model): a LoRA rate for the bundled model."""
NOT_SETTINGS = ("model", "device", "precision")
"""``CrossDomainSettings`` fields the server sets, not the user."""


class StreamStopped(Exception):
    """The stream was asked to stop, or another worker took it over."""


def _setting_names() -> tuple[str, ...]:
    from training.engine.cross_domain import CrossDomainSettings

    return tuple(f.name for f in fields(CrossDomainSettings) if f.name not in NOT_SETTINGS)


def stream_settings(given: dict | None, *, model: str, domains: int) -> dict:
    """The engine's settings for these user settings (defaults filled in); ValidationError names a bad field
    as ``settings.<name>``."""
    from training.engine.cross_domain import CrossDomainSettings, check_weights

    given = {} if given is None else given
    if not isinstance(given, dict):
        raise ValidationError({"settings": "Settings must be an object of named settings."})
    if unknown := sorted(set(given) - set(_setting_names())):
        raise ValidationError({f"settings.{unknown[0]}": f"Unknown setting {unknown[0]!r}."})
    data = {**DEFAULTS, **given}
    if isinstance(data.get("weights"), list):
        data["weights"] = tuple(data["weights"])
    try:
        CrossDomainSettings(model=model, **data)
        check_weights(data.get("weights"), domains)
    except (ConfigError, TypeError, ValueError) as exc:
        name, _, message = str(exc).partition(": ")
        field = name.split("[")[0]
        raise ValidationError({f"settings.{field}" if message else "settings": str(exc)}) from None
    return data


def domain_stream_create(
    *,
    name: str,
    project,
    base_model: ModelEntry | None,
    versions: list[DatasetVersion],
    settings: dict | None = None,
    created_by=None,
) -> DomainStream:
    """Queue a stream over ``versions`` (in this order); ValidationError names the field of a problem."""
    errors = {}
    if not (name or "").strip():
        errors["name"] = "Give the stream a name."
    if base_model is None:
        errors["base_model"] = "Choose a base model."
    elif not models_for_user(user=created_by, kinds=[ModelKind.CAUSAL_LM]).filter(pk=base_model.pk).exists():
        errors["base_model"] = "No such language model among those you can use."
    if project.task_type not in TEXT_PAIR_TYPES:
        errors["versions"] = "Domains are text preference pairs: choose versions of a text project."
    elif len(versions) < 2 or len({v.pk for v in versions}) != len(versions):
        errors["versions"] = "Choose at least two different dataset versions: the domains, in order."
    elif stranger := next((v for v in versions if v.project_id != project.pk), None):
        errors["versions"] = f"{stranger} is not a version of {project}."
    elif thin := next((v for v in versions if not v.stats.get("train") or not v.stats.get("test")), None):
        errors["versions"] = f"v{thin.number} needs training and held-out rows (it has none of one)."
    try:
        model = base_model.spec if base_model is not None else "tiny"
        data = stream_settings(settings, model=model, domains=max(2, len(versions)))
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    stream = DomainStream.objects.create(
        name=name.strip()[:200],
        project=project,
        base_model=base_model,
        versions=[v.pk for v in versions],
        settings=data,
        progress_total=3 * len(versions),
        run_token=new_run_token(),
        created_by=created_by,
    )
    job_send_on_commit(DOMAIN_STREAM_JOBS, stream.pk)
    return stream


def domain_stream_cancel(*, stream: DomainStream) -> DomainStream:
    """A queued stream is cancelled at once, a running one before its next training step."""
    from django.utils import timezone

    DomainStream.objects.filter(pk=stream.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    DomainStream.objects.filter(pk=stream.pk, state=JobState.RUNNING).update(cancel_requested=True)
    stream.refresh_from_db()
    return stream


def _enqueue(stream_id: int) -> None:
    from ..tasks import domain_stream_run as task

    task.apply_async(args=[stream_id], queue=Queue.CPU)


DOMAIN_STREAM_JOBS = JobKind(
    name="domain_stream",
    model=DomainStream,
    enqueue=_enqueue,
    stale_after=seconds_setting("TRAINING_HEARTBEAT_STALE_SECONDS"),
    max_attempts=setting("LOOP_MAX_ATTEMPTS"),
    fail=lambda stream: {"error": f"The worker stopped reporting {stream.attempts} times; giving up."},
    waiting=Q(cancel_requested=False),
    resend_after=seconds_setting("TRAINING_QUEUED_RESEND_SECONDS"),
    cancel_field="cancel_requested",
)
"""A stream whose worker died is queued again and starts over."""


def domain_stream_run(*, stream_id: int) -> None:
    """Run a queued stream to its end (the Celery task calls this); errors end up on the row."""
    import torch

    from training.engine.cross_domain import CrossDomainSettings, Domain, StreamCancelled, Watch, compare

    from .runner import dataset_export_ensure

    lease = job_claim(DomainStream, pk=stream_id, waiting=Q(cancel_requested=False))
    if lease is None:
        return
    stream = DomainStream.objects.select_related("base_model").get(pk=stream_id)
    by_pk = DatasetVersion.objects.in_bulk(stream.versions)
    versions = [by_pk[pk] for pk in stream.versions]
    started = [0]

    def stopped() -> bool:
        if lease.lost.is_set():
            return True
        return DomainStream.objects.filter(pk=stream_id, cancel_requested=True).exists()

    def on_stage(method: str, domain: str) -> None:
        if stopped():
            raise StreamStopped
        started[0] += 1
        lease.renew(method=method, domain=domain, progress_done=started[0])

    torch.set_num_threads(torch_threads())
    work = artifact_root() / "domain_streams" / stream.run_token / f"attempt-{lease.attempt}"
    try:
        with lease.heartbeat(django_settings.TRAINING_HEARTBEAT_SECONDS):
            domains = [Domain(f"v{v.number}", str(dataset_export_ensure(v))) for v in versions]
            settings = CrossDomainSettings(model=stream.base_model.spec, **_engine_values(stream.settings))
            result = compare(domains, settings, work, watch=Watch(on_stage, stopped)).to_dict()
    except LeaseLost:
        return
    except (StreamStopped, StreamCancelled):
        if not lease.lost.is_set():
            lease.finish(JobState.CANCELLED)
        return
    except Exception as error:  # the row must say why; the worker keeps running
        lease.finish(JobState.FAILED, error=str(error), traceback=traceback.format_exc(limit=5))
        return
    lease.finish(JobState.SUCCEEDED, result=_shown(result), method="", domain="")


def _engine_values(stored: dict) -> dict:
    values = dict(stored)
    if isinstance(values.get("weights"), list):
        values["weights"] = tuple(values["weights"])
    return values


def _shown(result: dict) -> dict:
    """The matrices without the kept modules' server folders (a module is named by its domain and step)."""
    for matrix in result.values():
        for module in matrix.get("modules", []):
            module.pop("adapter", None)
            module.pop("base", None)
    return result
