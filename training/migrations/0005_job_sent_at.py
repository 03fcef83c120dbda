from django.db import migrations, models
from django.db.models.functions import Coalesce

HELP = "When the broker accepted its task; empty while the job waits for the broker."


def mark_sent(apps, schema_editor):
    """Jobs queued before this field existed had their task sent: count them as delivered."""
    for name in ("TrainingJob", "GenerationJob"):
        model = apps.get_model("training", name)
        model.objects.update(sent_at=Coalesce(models.F("heartbeat_at"), models.F("created_at")))


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0004_run_token_model_project"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingjob",
            name="sent_at",
            field=models.DateTimeField(blank=True, help_text=HELP, null=True),
        ),
        migrations.AddField(
            model_name="generationjob",
            name="sent_at",
            field=models.DateTimeField(blank=True, help_text=HELP, null=True),
        ),
        migrations.RunPython(mark_sent, migrations.RunPython.noop),
    ]
