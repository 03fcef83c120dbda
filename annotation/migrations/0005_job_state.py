"""Imports and freezes share the job core's vocabulary: ``status`` becomes ``state`` and
``pending`` (waiting for a worker, or an import awaiting confirmation) becomes ``queued``."""

from django.db import migrations


def pending_to_queued(apps, schema_editor):
    for name in ("ImportJob", "FreezeJob"):
        apps.get_model("annotation", name).objects.filter(status="pending").update(status="queued")


def queued_to_pending(apps, schema_editor):
    for name in ("ImportJob", "FreezeJob"):
        apps.get_model("annotation", name).objects.filter(status="queued").update(status="pending")


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0004_job_leases"),
    ]

    operations = [
        migrations.RunPython(pending_to_queued, queued_to_pending),
        migrations.RenameField(model_name="importjob", old_name="status", new_name="state"),
        migrations.RenameField(model_name="freezejob", old_name="status", new_name="state"),
    ]
