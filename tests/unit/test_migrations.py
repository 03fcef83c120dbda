"""Data migrations that move rows between tables keep every row."""

import importlib

import pytest
from django.apps import apps
from django.db import connection, models
from django.test.utils import isolate_apps
from django.utils import timezone

from tests.factories import ProjectFactory
from training.models import GenerationJob

pytestmark = pytest.mark.django_db(transaction=True)


@isolate_apps("annotation")
def _legacy_table_model():
    class LegacyGenerationJob(models.Model):
        """The annotation app's generation job as its migrations 0002 and 0004 left it."""

        kind = models.CharField(max_length=20)
        model_spec = models.CharField(max_length=500)
        options = models.JSONField(default=dict)
        status = models.CharField(max_length=10)
        progress_done = models.PositiveIntegerField(default=0)
        progress_total = models.PositiveIntegerField(default=0)
        result = models.JSONField(default=dict)
        error = models.TextField(blank=True)
        created_at = models.DateTimeField()
        started_at = models.DateTimeField(null=True)
        heartbeat_at = models.DateTimeField(null=True)
        attempts = models.PositiveSmallIntegerField(default=0)
        finished_at = models.DateTimeField(null=True)
        created_by_id = models.IntegerField(null=True)
        model_id = models.IntegerField(null=True)
        project_id = models.IntegerField()

        class Meta:
            app_label = "annotation"
            db_table = "annotation_generationjob"

        def __str__(self):
            return f"legacy generation job {self.pk}"

    return LegacyGenerationJob


def test_generation_jobs_made_before_they_moved_to_training_are_carried_over_with_their_ids():
    migration = importlib.import_module("training.migrations.0003_generation_job")
    project = ProjectFactory()
    legacy = _legacy_table_model()
    with connection.schema_editor() as editor:
        editor.create_model(legacy)
    now = timezone.now()
    legacy.objects.create(
        id=41,
        kind="candidates",
        model_spec="tiny",
        options={"k": 2},
        status="succeeded",
        progress_done=3,
        progress_total=3,
        result={"items": 3},
        created_at=now,
        finished_at=now,
        attempts=1,
        project_id=project.pk,
    )
    with connection.schema_editor() as editor:
        migration.adopt_legacy_generation_jobs(apps, editor)
    assert "annotation_generationjob" not in connection.introspection.table_names()
    job = GenerationJob.objects.get(pk=41)
    assert (job.state, job.options, job.result, job.project_id) == (
        "succeeded",
        {"k": 2},
        {"items": 3},
        project.pk,
    )
    assert GenerationJob.objects.create(project=project, model_spec="tiny").pk > 41  # the ids go on


def test_a_database_made_after_the_move_has_nothing_to_carry_over():
    migration = importlib.import_module("training.migrations.0003_generation_job")
    with connection.schema_editor() as editor:
        migration.adopt_legacy_generation_jobs(apps, editor)
    assert not GenerationJob.objects.exists()


def test_step_proposals_stored_before_the_separator_fix_end_their_steps_with_the_newline():
    from annotation.models import Item

    migration = importlib.import_module("annotation.migrations.0007_step_proposal_separator")
    project = ProjectFactory(task_type="stepwise")
    old = Item.objects.create(
        project=project,
        prompt="q",
        content_hash="a",
        metadata={"initial_reason_steps": "Step 1: 2 + 2 = 4.", "step_proposal": {"status": "proposed"}},
    )
    imported = Item.objects.create(
        project=project, prompt="q", content_hash="b", metadata={"initial_reason_steps": "Step 1: as given."}
    )
    migration.end_steps_with_newline(apps, None)
    old.refresh_from_db()
    imported.refresh_from_db()
    assert old.metadata["initial_reason_steps"] == "Step 1: 2 + 2 = 4.\n"
    assert imported.metadata["initial_reason_steps"] == "Step 1: as given."  # not the studio's: untouched
