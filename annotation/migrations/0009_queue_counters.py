"""Queue counters (``services.progress``): ``Task.complete``, its partial index, and the counter rows,
filled from the existing assignments."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

FINAL = ("done", "skipped")


def fill_counters(apps, schema_editor):
    Project = apps.get_model("annotation", "Project")
    Task = apps.get_model("annotation", "Task")
    Assignment = apps.get_model("annotation", "Assignment")
    ProjectProgress = apps.get_model("annotation", "ProjectProgress")
    AnnotatorProgress = apps.get_model("annotation", "AnnotatorProgress")
    done = (
        Assignment.objects.filter(task=OuterRef("pk"), state="done")
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    for project in Project.objects.all().iterator():
        tasks = Task.objects.filter(project=project)
        tasks.alias(done=Coalesce(Subquery(done), 0)).filter(done__gte=project.overlap).update(complete=True)
        assignments = Assignment.objects.filter(task__project=project)
        ProjectProgress.objects.create(
            project=project,
            tasks=tasks.count(),
            tasks_complete=tasks.filter(complete=True).count(),
            judgments_done=assignments.filter(state="done").count(),
        )
        per_annotator = (
            assignments.order_by()
            .values("annotator_id")
            .annotate(
                done=Count("pk", filter=Q(state="done")),
                skipped=Count("pk", filter=Q(state="skipped")),
                final_open=Count("pk", filter=Q(state__in=FINAL, task__complete=False)),
            )
        )
        AnnotatorProgress.objects.bulk_create(
            AnnotatorProgress(project=project, **row) for row in per_annotator
        )


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0008_job_sent_at"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="complete",
            field=models.BooleanField(
                db_default=False,
                default=False,
                help_text="Holds the project's overlap of done assignments (kept by services.progress).",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("complete", False)), fields=["project", "id"], name="task_queue_open"
            ),
        ),
        migrations.AddIndex(
            model_name="item",
            index=models.Index(
                condition=models.Q(("is_gold", True)), fields=["project"], name="item_gold_by_project"
            ),
        ),
        migrations.CreateModel(
            name="ProjectProgress",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("tasks", models.IntegerField(default=0)),
                ("tasks_complete", models.IntegerField(default=0, help_text="Tasks with ``complete`` set.")),
                (
                    "judgments_done",
                    models.IntegerField(default=0, help_text="Done assignments (human judgments)."),
                ),
                (
                    "project",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="progress",
                        to="annotation.project",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="AnnotatorProgress",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("done", models.IntegerField(default=0)),
                ("skipped", models.IntegerField(default=0)),
                (
                    "final_open",
                    models.IntegerField(
                        default=0,
                        help_text="Incomplete tasks this annotator has done or skipped (not theirs to take).",
                    ),
                ),
                (
                    "annotator",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="annotation.project"
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("project", "annotator"), name="annotator_progress_once")
                ],
            },
        ),
        migrations.RunPython(fill_counters, migrations.RunPython.noop),
    ]
