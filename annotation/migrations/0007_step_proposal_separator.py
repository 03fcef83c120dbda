"""Step-DPO proposals stored by the step check before it ended ``initial_reason_steps`` with the newline
(as imported Step-DPO rows do) get it now, so versions frozen from them keep each step on its own line.
Only the studio's own proposals change; imported rows and frozen versions stay as they are."""

from django.db import migrations


def end_steps_with_newline(apps, schema_editor):
    Item = apps.get_model("annotation", "Item")
    for item in Item.objects.filter(metadata__has_key="step_proposal").only("metadata").iterator():
        steps = item.metadata.get("initial_reason_steps") or ""
        if steps and not steps.endswith("\n"):
            item.metadata["initial_reason_steps"] = steps + "\n"
            item.save(update_fields=["metadata"])


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0006_job_core"),
    ]

    operations = [
        migrations.RunPython(end_steps_with_newline, migrations.RunPython.noop),
    ]
