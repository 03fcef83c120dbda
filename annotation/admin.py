from django.contrib import admin

from .models import (
    Asset,
    DatasetVersion,
    FreezeJob,
    ImportJob,
    Item,
    Judgment,
    Membership,
    Project,
    Task,
)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "task_type", "overlap", "created_at"]


admin.site.register([Membership, Item, Task, Asset, ImportJob, FreezeJob])


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "annotator", "source", "choice", "strength", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "content_hash", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False
