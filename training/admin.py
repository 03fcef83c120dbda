from django.contrib import admin

from .models import Artifact, GenerationJob, MetricPoint, ModelEntry, TrainingJob


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "location", "path", "is_adapter", "produced_by")
    list_filter = ("kind", "location")


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "method",
        "state",
        "step",
        "total_steps",
        "queue",
        "attempts",
        "worker_host",
        "created_at",
    )
    list_filter = ("state", "method", "queue")
    readonly_fields = ("heartbeat_at", "started_at", "finished_at", "traceback")


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("job", "kind", "path", "size")


@admin.register(MetricPoint)
class MetricPointAdmin(admin.ModelAdmin):
    list_display = ("job", "name", "step", "value")
    list_filter = ("name",)


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "state", "progress_done", "progress_total", "created_at"]
